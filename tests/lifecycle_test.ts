import assert from "node:assert/strict";
import { iso } from "../src/clock.ts";
import {
  backoffMs,
  JOB_EVENT_TYPES,
  type JobEvent,
  type JobEventType,
  next,
} from "../src/lifecycle/mod.ts";
import { type Job, JOB_STATUSES, type JobStatus, SCHEMA_VERSION } from "../src/types.ts";

const NOW = Date.UTC(2026, 0, 1);

function jobIn(status: JobStatus, patch: Partial<Job> = {}): Job {
  return {
    v: SCHEMA_VERSION,
    id: "01JTEST0000000000000000000",
    handler_name: "t",
    source: "",
    status,
    progress: { current: 0, total: 0 },
    cost_estimate: 0,
    cost_actual: 0,
    retry_count: 0,
    created_at: iso(NOW - 5000),
    updated_at: iso(NOW - 5000),
    queue: "default",
    priority: 0,
    attempt: status === "queued" ? 0 : 1,
    run_at: iso(NOW - 5000),
    lease: status === "running" ? { owner: "w1", expires_at: iso(NOW + 1000) } : null,
    event_seq: 1,
    ...patch,
  };
}

const retryableError = {
  stage: "run",
  code: "network_error",
  message: "boom",
  retryable: true,
  recoverable: true,
} as const;

function eventOf(type: JobEventType): JobEvent {
  switch (type) {
    case "claim":
      return { type, now: NOW, lease: { owner: "w2", expires_at: iso(NOW + 15000) } };
    case "fail":
      return { type, now: NOW, error_context: retryableError, backoff_ms: 1000 };
    case "expire":
      return { type, now: NOW, backoff_ms: 1000 };
    case "pause":
      return { type, now: NOW, pause_reason: "user_requested" };
    default:
      return { type, now: NOW } as JobEvent;
  }
}

/** DESIGN.md's table for a job with retry_count 0 and a retryable error; "–" pairs are absent. */
const TABLE: Record<JobStatus, Partial<Record<JobEventType, JobStatus>>> = {
  queued: { claim: "running", fail: "failed", pause: "paused", cancel: "cancelled" },
  running: {
    complete: "completed",
    fail: "queued",
    expire: "queued",
    requeue: "queued",
    pause: "paused",
    cancel: "cancelled",
  },
  paused: { resume: "queued", cancel: "cancelled" },
  failed: { retry: "queued" },
  completed: {},
  cancelled: {},
};

Deno.test("next() follows the lifecycle table for every (status, event) pair", async (t) => {
  for (const status of JOB_STATUSES) {
    for (const type of JOB_EVENT_TYPES) {
      const expected = TABLE[status][type];
      await t.step(`${status} × ${type} → ${expected ?? "refused"}`, () => {
        const job = jobIn(status);
        const d = next(job, eventOf(type));
        if (!expected) {
          assert.deepEqual(d, { ok: false, from: status, event: type });
          return;
        }
        assert.ok(d.ok);
        assert.equal(d.to, expected);
        assert.equal(d.job.status, expected);
        assert.equal(d.entry.from, status);
        assert.equal(d.entry.to, expected);
        assert.equal(d.entry.event, type);
        assert.equal(d.job.event_seq, job.event_seq + 1);
        assert.equal(d.job.updated_at, iso(NOW));
        assert.equal(job.status, status, "next() must not mutate its input");
      });
    }
  }
});

Deno.test("next() fails a running job once its retries are spent or the error is permanent", () => {
  const spent = next(jobIn("running", { retry_count: 2 }), eventOf("fail"));
  assert.ok(spent.ok);
  assert.equal(spent.to, "failed");
  assert.equal(spent.job.retry_count, 2);
  assert.equal(spent.job.error_context?.code, "network_error");

  const permanent = next(jobIn("running"), {
    type: "fail",
    now: NOW,
    backoff_ms: 1000,
    error_context: { ...retryableError, code: "validation_error", retryable: false },
  });
  assert.ok(permanent.ok);
  assert.equal(permanent.to, "failed");
  assert.equal(permanent.job.retry_count, 0);

  const expired = next(jobIn("running", { retry_count: 2 }), eventOf("expire"));
  assert.ok(expired.ok);
  assert.equal(expired.to, "failed");
  assert.equal(expired.job.error_context?.stage, "lease");
});

Deno.test("next() sets retry fields as DESIGN.md says", () => {
  const failed = next(jobIn("running"), eventOf("fail"));
  assert.ok(failed.ok);
  assert.equal(failed.job.retry_count, 1);
  assert.equal(failed.job.run_at, iso(NOW + 1000));
  assert.equal(failed.job.lease, null);

  const requeued = next(
    jobIn("running", { retry_count: 1, checkpoint: { step: 3 } }),
    eventOf("requeue"),
  );
  assert.ok(requeued.ok);
  assert.equal(requeued.job.retry_count, 1, "requeue is not a retry");
  assert.deepEqual(requeued.job.checkpoint, { step: 3 });

  const retried = next(jobIn("failed", { retry_count: 2 }), eventOf("retry"));
  assert.ok(retried.ok);
  assert.equal(retried.job.retry_count, 0);

  const claimed = next(jobIn("queued", { attempt: 2 }), eventOf("claim"));
  assert.ok(claimed.ok);
  assert.equal(claimed.job.attempt, 3);
  assert.equal(claimed.job.lease?.owner, "w2");

  const paused = next(jobIn("running"), eventOf("pause"));
  assert.ok(paused.ok);
  assert.equal(paused.job.pulse_state?.is_paused, true);
  assert.equal(paused.job.pulse_state?.pause_reason, "user_requested");
  const resumed = next(paused.job, eventOf("resume"));
  assert.ok(resumed.ok);
  assert.equal(resumed.job.pulse_state, null);
});

Deno.test("backoffMs() doubles from 1 s with ±10 % jitter, capped at 30 s", () => {
  assert.equal(backoffMs(1, 0.5), 1000);
  assert.equal(backoffMs(2, 0.5), 2000);
  assert.equal(backoffMs(1, 0), 900);
  assert.equal(backoffMs(1, 0.999999), 1100);
  assert.equal(backoffMs(10, 0.5), 30_000);
});
