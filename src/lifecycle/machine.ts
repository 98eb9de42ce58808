/**
 * The job lifecycle as one XState v5 machine: DESIGN.md's table, and nothing else.
 *
 * The machine's context is the job record; each accepted event's actions compute the next record.
 * It is only ever used through the pure `transition()` (see `next.ts`), never as a running actor,
 * so no timer lives in it: retry delays come back as data (`run_at`).
 *
 * @module
 */
import { assign, setup } from "xstate";
import { iso } from "../clock.ts";
import type { ErrorContext, Job, Lease, PauseReason } from "../types.ts";

/** Retries allowed after the first attempt (seed: "max 2"). */
export const MAX_RETRIES = 2;

type At = { now: number; reason?: string };
/** Events are lowercase verbs, the same words as the API routes. */
export type JobEvent =
  | At & { type: "claim"; lease: Lease }
  | At & { type: "complete"; result?: unknown; cost_actual?: number }
  | At & { type: "fail"; error_context: ErrorContext; backoff_ms: number; cost_actual?: number }
  | At & { type: "expire"; backoff_ms: number }
  | At & { type: "requeue" }
  | At & { type: "pause"; pause_reason: PauseReason }
  | At & { type: "resume" }
  | At & { type: "cancel" }
  | At & { type: "retry" };
export type JobEventType = JobEvent["type"];
export const JOB_EVENT_TYPES: readonly JobEventType[] = [
  "claim",
  "complete",
  "fail",
  "expire",
  "requeue",
  "pause",
  "resume",
  "cancel",
  "retry",
];

type Ctx = { job: Job };
type Patch = (job: Job, e: JobEvent) => Partial<Job>;
const update = (patch: Patch) =>
  assign<Ctx, JobEvent, undefined, JobEvent, never>({
    job: ({ context, event }) => ({
      ...context.job,
      ...patch(context.job, event),
      updated_at: iso(event.now),
    }),
  });

const toQueued = (runAt: (job: Job, e: JobEvent) => number, retried: boolean) =>
  update((job, e) => ({
    lease: null,
    run_at: iso(runAt(job, e)),
    retry_count: retried ? job.retry_count + 1 : job.retry_count,
    cost_actual: costOf(job, e),
  }));
const costOf = (job: Job, e: JobEvent) =>
  "cost_actual" in e && e.cost_actual !== undefined ? e.cost_actual : job.cost_actual;
const failure = (e: JobEvent): ErrorContext =>
  e.type === "fail" ? e.error_context : {
    stage: "lease",
    code: "timeout",
    message: e.reason ?? "Lease expired before the job finished",
    retryable: true,
    recoverable: true,
  };
const recordError = update((_job, e) => ({
  error_context: failure(e),
  error: failure(e).message,
}));
const toFailed = update((job, e) => ({
  lease: null,
  completed_at: iso(e.now),
  cost_actual: costOf(job, e),
}));
const afterBackoff = (_job: Job, e: JobEvent) =>
  e.now + ("backoff_ms" in e ? Math.max(0, e.backoff_ms) : 0);
const canRetry = ({ context, event }: { context: Ctx; event: JobEvent }) =>
  context.job.retry_count < MAX_RETRIES &&
  (event.type !== "fail" || event.error_context.retryable);
const unpause = update(() => ({ pulse_state: null }));
const cancel = {
  target: "cancelled",
  actions: update((_j, e) => ({ lease: null, completed_at: iso(e.now) })),
} as const;
const pause = {
  target: "paused",
  actions: update((_j, e) => ({
    lease: null,
    pulse_state: pulseStateOf(e.type === "pause" ? e.pause_reason : "user_requested"),
  })),
} as const;

function pulseStateOf(reason: PauseReason) {
  return {
    calls_this_minute: 0,
    calls_remaining: null,
    spend_today: 0,
    spend_this_month: 0,
    budget_remaining: null,
    is_paused: true,
    pause_reason: reason,
  };
}

/** The lifecycle table of DESIGN.md; any pair not listed here is refused. */
export const jobMachine = setup({
  types: {} as { context: Ctx; events: JobEvent; input: Ctx },
  guards: { canRetry },
}).createMachine({
  id: "job",
  context: ({ input }) => input,
  initial: "queued",
  states: {
    queued: {
      on: {
        claim: {
          target: "running",
          actions: update((job, e) => ({
            lease: e.type === "claim" ? e.lease : null,
            attempt: job.attempt + 1,
            started_at: iso(e.now),
            pulse_state: null,
          })),
        },
        fail: { target: "failed", actions: [recordError, toFailed] },
        pause,
        cancel,
      },
    },
    running: {
      on: {
        complete: {
          target: "completed",
          actions: update((job, e) => ({
            lease: null,
            completed_at: iso(e.now),
            result: e.type === "complete" ? e.result : undefined,
            cost_actual: costOf(job, e),
          })),
        },
        fail: [
          {
            guard: "canRetry",
            target: "queued",
            actions: [recordError, toQueued(afterBackoff, true)],
          },
          { target: "failed", actions: [recordError, toFailed] },
        ],
        expire: [
          {
            guard: "canRetry",
            target: "queued",
            actions: [recordError, toQueued(afterBackoff, true)],
          },
          { target: "failed", actions: [recordError, toFailed] },
        ],
        requeue: { target: "queued", actions: toQueued((_j, e) => e.now, false) },
        pause,
        cancel,
      },
    },
    paused: {
      on: {
        resume: { target: "queued", actions: [unpause, toQueued((_j, e) => e.now, false)] },
        cancel,
      },
    },
    failed: {
      on: {
        retry: {
          target: "queued",
          actions: update((_j, e) => ({ retry_count: 0, run_at: iso(e.now), completed_at: null })),
        },
      },
    },
    completed: { type: "final" },
    cancelled: { type: "final" },
  },
});
