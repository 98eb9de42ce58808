/**
 * The stored form of job records and history entries (src/store/_codec.ts): every job the
 * engine can produce reads back exactly as written, records written as objects by an earlier
 * version still read, and a row is much smaller than the object it replaces.
 */
import assert from "node:assert/strict";
import { serialize } from "node:v8";
import fc from "fast-check";
import { iso } from "../src/clock.ts";
import { decodeEvent, decodeEvents, decodeJob } from "../src/store/mod.ts";
import { encodeEvent, encodeJob, JOB_FIELDS } from "../src/store/_codec.ts";
import { Job, type JobEvent, SCHEMA_VERSION } from "../src/types.ts";

const T = Date.UTC(2026, 11, 3, 15, 22, 19, 548);
const ID = "01M8Y7ZMGW8NC51A7HFJAT4QR0";

const base: Job = {
  v: SCHEMA_VERSION,
  id: ID,
  handler_name: "bench.noop",
  source: "",
  status: "completed",
  progress: { current: 0, total: 0 },
  cost_estimate: 0,
  cost_actual: 0,
  pulse_state: null,
  retry_count: 0,
  created_at: iso(T),
  started_at: iso(T + 4),
  completed_at: iso(T + 21),
  updated_at: iso(T + 21),
  queue: "default",
  priority: 0,
  attempt: 1,
  run_at: iso(T),
  error_context: null,
  lease: null,
  event_seq: 3,
  reservation: null,
  result: null,
};

/** Through KV's own value encoding too, as a real write and read would go. */
const stored = (job: Job) => structuredClone(encodeJob(job));

Deno.test("job records read back exactly as written, in every shape the engine writes", () => {
  const shapes: Record<string, Job> = {
    "completed no-op": base,
    "queued with payload and parent": {
      ...base,
      status: "queued",
      payload: { url: "http://127.0.0.1/x", rows: [1, 2, { a: null }] },
      parent_job_id: "01M8Y7ZMGW8NC51A7HFJAT4QR1",
      source: "s3://bucket/key",
      started_at: null,
      completed_at: null,
      result: undefined,
    },
    "running with lease, progress, checkpoint, reservation": {
      ...base,
      status: "running",
      lease: { owner: "host-1:123", expires_at: iso(T + 30_000) },
      progress: { current: 7, total: 9 },
      checkpoint: { step: "started", cursor: 42 },
      cost_estimate: 0.1,
      reservation: {
        day: "2026-12-03",
        month: "2026-12",
        reserved_micros: 100_000,
        admitted_micros: 5,
        needed_micros: 7,
        assumed_micros: 0,
      },
    },
    "paused for budget": {
      ...base,
      status: "paused",
      pulse_state: {
        calls_this_minute: 0,
        calls_remaining: null,
        spend_today: 1,
        spend_this_month: 2,
        budget_remaining: 0,
        is_paused: true,
        pause_reason: "budget_exceeded",
      },
    },
    "failed with error": {
      ...base,
      status: "failed",
      retry_count: 3,
      error: "boom",
      error_context: {
        stage: "run",
        code: "network_error",
        message: "boom",
        retryable: true,
        recoverable: true,
      },
    },
    "a field the layout does not name yet": { ...base, ...{ future_field: { x: 1 } } },
    "a time that is not canonical text": { ...base, run_at: "2026-12-03T15:22:19Z" },
  };
  for (const [name, job] of Object.entries(shapes)) {
    const expected = Object.fromEntries(Object.entries(job).filter(([, v]) => v !== undefined));
    assert.deepEqual(decodeJob(ID, stored(job)), expected, name);
  }
});

Deno.test("every field of the record reads back, each from its own place in the row", () => {
  const full: Job = {
    ...base,
    status: "running",
    payload: { p: 1 },
    pulse_state: {
      calls_this_minute: 1,
      calls_remaining: 2,
      spend_today: 3,
      spend_this_month: 4,
      budget_remaining: 5,
      is_paused: false,
    },
    error: "e",
    parent_job_id: "01M8Y7ZMGW8NC51A7HFJAT4QR9",
    retry_count: 2,
    progress: { current: 3, total: 4 },
    result: { r: 2 },
    error_context: {
      stage: "run",
      code: "unknown",
      message: "m",
      retryable: false,
      recoverable: false,
    },
    lease: { owner: "o", expires_at: iso(T + 1) },
    checkpoint: { c: 3 },
    reservation: { day: "2026-12-03", month: "2026-12", reserved_micros: 1, admitted_micros: 0 },
    history: [
      encodeEvent({
        seq: 3,
        at: iso(T),
        event: "claim",
        from: "queued",
        to: "running",
        attempt: 1,
      }),
    ],
  };
  // A field added to the schema must be added here too (and to the row's layout and decoder).
  assert.deepEqual(Object.keys(full).sort(), Object.keys(Job.shape).sort());
  assert.deepEqual(decodeJob(ID, stored(full)), full);
  // Each field sits where the layout says: a row holding only that position reads it back.
  const row = stored(full);
  for (const [i, field] of JOB_FIELDS.entries()) {
    const only = row.map((v, at) => at === 0 || at === i + 2 ? v : undefined);
    assert.deepEqual(decodeJob(ID, only)[field], full[field], field);
  }
  assert.equal(row.length, JOB_FIELDS.length + 2);
});

Deno.test("any JSON payload, result and checkpoint survive the row", () => {
  fc.assert(
    fc.property(fc.jsonValue(), fc.jsonValue(), fc.jsonValue(), (payload, result, checkpoint) => {
      const job = { ...base, payload, result, checkpoint } as Job;
      const expected = Object.fromEntries(Object.entries(job).filter(([, v]) => v !== undefined));
      assert.deepEqual(decodeJob(ID, stored(job)), expected);
    }),
    { numRuns: 200 },
  );
});

Deno.test("records written as objects before rows still read", () => {
  assert.deepEqual(decodeJob(ID, structuredClone(base)), base);
  const legacy: JobEvent = {
    seq: 1,
    at: iso(T),
    event: "enqueue",
    from: null,
    to: "queued",
    attempt: 0,
  };
  assert.deepEqual(decodeEvent(structuredClone(legacy)), legacy);
});

Deno.test("history entries read back exactly, with and without a reason", () => {
  const entries: JobEvent[] = [
    { seq: 1, at: iso(T), event: "enqueue", from: null, to: "queued", attempt: 0 },
    {
      seq: 4,
      at: iso(T + 9),
      event: "fail",
      from: "running",
      to: "queued",
      attempt: 2,
      reason: "x",
    },
  ];
  for (const e of entries) assert.deepEqual(decodeEvent(structuredClone(encodeEvent(e))), e);
  // Small integers throughout: one double would store the whole row as 9-byte doubles (~66 B).
  assert.ok(serialize(encodeEvent(entries[0])).length <= 30, "a compact entry");
});

Deno.test("history entries stored as text (before compact entries) still read", () => {
  const e: JobEvent = {
    seq: 2,
    at: iso(T),
    event: "fail",
    from: "running",
    to: "queued",
    attempt: 1,
    reason: "boom",
  };
  const asText = [e.seq, e.at, e.event, e.from, e.to, e.attempt, e.reason];
  assert.deepEqual(decodeEvent(asText), e);
  assert.deepEqual(decodeEvents([asText, encodeEvent({ ...e, seq: 3 })]), [e, { ...e, seq: 3 }]);
  // A time that is not canonical text, and an event this version has no number for, stay text.
  const odd = { ...e, at: "2026-12-03T15:22:19Z", event: "migrated" };
  assert.deepEqual(encodeEvent(odd).slice(1, 3), [odd.at, "migrated"]);
  assert.deepEqual(decodeEvent(structuredClone(encodeEvent(odd))), odd);
});

Deno.test("a row is under half the object it replaces", () => {
  const row = serialize(encodeJob(base)).length;
  const object = serialize(base).length;
  assert.ok(row * 2 < object, `row ${row} bytes, object ${object} bytes`);
});

Deno.test("a field appended to the layout later reads as absent from an older row", () => {
  // An older row is shorter: whatever the next layout appends must not pick up its last value.
  const row = structuredClone(encodeJob({ ...base, ...{ future_field: { x: 1 } } }));
  const longer = decodeJob(ID, [...row, undefined]);
  assert.deepEqual((longer as Record<string, unknown>).future_field, { x: 1 });
  assert.equal(row.length, 2 + 26, "version, rest, then the 26 named fields");
});
