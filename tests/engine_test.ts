/**
 * The engine through the real store and pool with the manual clock: retries and backoff,
 * permanent failures, pause and cancel, and the parts of `ctx`. The test `random` is 0.5, so
 * the backoff is exactly 1000 ms, then 2000 ms.
 */
import assert from "node:assert/strict";
import { iso } from "../src/clock.ts";
import { defineHandler, PermanentError, z } from "../src/mod.ts";
import { payloadBytes } from "../src/store/mod.ts";
import type { Job } from "../src/types.ts";
import { setup, type World } from "./_setup.ts";

const JOBS = "/api/pulse/jobs";
const Empty = z.object({});
/** Starts per job id, and what each handler saw; keyed by job id so tests never share. */
const calls = new Map<string, number>();
const seen = new Map<string, unknown[]>();
const gates = new Map<string, { release: () => void; signal: AbortSignal; finished: boolean }>();
const count = (id: string) => calls.set(id, (calls.get(id) ?? 0) + 1).get(id)!;
const note = (id: string, v: unknown) => seen.set(id, [...(seen.get(id) ?? []), v]);

const flaky = defineHandler({
  name: "test.flaky",
  description: "Throws on its first `fails` starts: a retryable error, or a PermanentError",
  payload: z.object({ fails: z.number().int(), permanent: z.boolean().optional() }),
  run: (ctx) => {
    if (count(ctx.job.id) > ctx.payload.fails) return { ok: ctx.attempt };
    if (ctx.payload.permanent) throw new PermanentError("bad input", "validation_error");
    throw new Error(`flaky ${ctx.attempt}`);
  },
});
const hold = defineHandler({
  name: "test.hold",
  description: "Waits for the test, ignoring its signal",
  payload: Empty,
  run: async (ctx) => {
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    const rec = { release, signal: ctx.signal, finished: false };
    gates.set(ctx.job.id, rec);
    await gate;
    rec.finished = true;
    return "late";
  },
});
const parts = defineHandler({
  name: "test.parts",
  description: "Uses progress, checkpoint and spawn; fails its first attempt",
  payload: Empty,
  run: async (ctx) => {
    note(ctx.job.id, { checkpoint: ctx.lastCheckpoint });
    await ctx.progress(3, 10);
    await ctx.progress(4);
    const a = await ctx.spawn({ handler_name: "test.flaky", payload: { fails: 0 }, key: "a" });
    const b = await ctx.spawn({ handler_name: "test.flaky", payload: { fails: 0 } });
    note(ctx.job.id, [a, b]);
    if (ctx.attempt === 1) {
      await ctx.checkpoint({ step: 1 });
      throw new Error("first attempt fails after its checkpoint");
    }
    return { resumed: ctx.lastCheckpoint };
  },
});
const data = defineHandler({
  name: "test.data",
  description: "Writes or reads ctx.data",
  payload: z.object({ op: z.enum(["write", "read"]) }),
  run: async (ctx) => {
    if (ctx.payload.op === "write") {
      await ctx.data.set(["k", 1], { v: "one" });
      await ctx.data.commit([
        { type: "set", key: ["k", 2], value: [2] },
        { type: "set", key: ["k", 3], value: 3 },
      ]);
      await ctx.data.delete(["k", 3]);
      return null;
    }
    const listed = [];
    for await (const e of ctx.data.list(["k"])) listed.push(e);
    return { one: await ctx.data.get(["k", 1]), listed };
  },
});
const big = defineHandler({
  name: "test.big",
  description: "Returns 30 KB (under the result limit) on a 40 KB payload",
  payload: z.object({ text: z.string() }),
  run: (ctx) => (count(ctx.job.id), { echo: ctx.payload.text.slice(0, 30_000) }),
});
const wide = defineHandler({
  name: "test.wide",
  description: "Takes a 40 KB payload, returns its length",
  payload: z.object({ text: z.string() }),
  run: (ctx) => (count(ctx.job.id), ctx.payload.text.length),
});
const loud = defineHandler({
  name: "test.loud",
  description: "Takes a 40 KB payload, throws a 24,000-character message",
  payload: z.object({ text: z.string() }),
  run: (ctx) => {
    count(ctx.job.id);
    throw new Error("e".repeat(24_000));
  },
});
const odd = defineHandler({
  name: "test.odd",
  description: "Returns what JSON holds otherwise than as given, or cannot hold at all",
  payload: z.object({
    kind: z.enum([
      "bigint",
      "cycle",
      "function",
      "nested-function",
      "getter-throws",
      "map",
      "tojson",
      "date",
    ]),
  }),
  run: (ctx) => {
    count(ctx.job.id);
    const big = "m".repeat(60_000);
    switch (ctx.payload.kind) {
      case "bigint":
        return { n: 10n };
      case "function":
        return () => 1;
      case "nested-function":
        return { f: () => 1 };
      case "getter-throws":
        return {
          get x() {
            throw new Error("getter");
          },
        };
      case "map":
        return new Map([["a", big]]);
      case "tojson":
        return { inner: { big, toJSON: () => "small" } };
      case "date":
        return { at: new Date(0) };
    }
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    return cycle;
  },
});

const full = defineHandler({
  name: "test.full",
  description: "Fills its record to the checkpoint limit, then throws a long non-Latin-1 message",
  payload: z.object({ text: z.string() }),
  run: async (ctx) => {
    count(ctx.job.id);
    // 56 KiB for payload + checkpoint (README), as KV stores them: the record is nearly full.
    const room = 56 * 1024 - payloadBytes(ctx.payload) - 64;
    await ctx.checkpoint({ c: "b".repeat(room) });
    throw new Error("漢".repeat(3000));
  },
});

const HANDLERS = [flaky, hold, parts, data, big, wide, loud, odd, full];

async function post(t: World, handler_name: string, payload: unknown = {}) {
  const res = await t.call("POST", JOBS, { handler_name, payload });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.id as string;
}

/** Polls the job `rounds` times (a bounded number of engine turns); `holds` must hold each time. */
async function stays(t: World, id: string, holds: (j: Job) => boolean, rounds = 50) {
  for (let i = 0; i < rounds; i++) {
    const job = await t.pulse.store.jobs.get(id);
    assert.ok(job && holds(job), `round ${i}: ${JSON.stringify(job)}`);
    await new Promise((r) => setTimeout(r, 1)); // yield to the engine; not a timing assumption
  }
}

const eventsOf = async (t: World, id: string) =>
  (await t.call("GET", `${JOBS}/${id}/events`)).body.events.map((e: { event: string }) => e.event);

Deno.test("a handler that fails twice with a retryable error completes on attempt 3", async () => {
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.flaky", { fails: 2 });
  const job = await t.waitFor(id, (j) => j.status === "completed", { stepMs: 100 });
  assert.equal(job.retry_count, 2);
  assert.equal(job.attempt, 3);
  assert.deepEqual(job.result, { ok: 3 });
  assert.equal(calls.get(id), 3);
});

Deno.test("a long error from a job whose record is nearly full is stored, cut by its bytes", async () => {
  // A message past U+00FF is stored two bytes per character: it keeps half as many, and the
  // history keeps a short one, so three failures fit beside a full checkpoint.
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.full", { text: "a".repeat(40_000) });
  const job = await t.waitFor(id, (j) => j.status === "failed", { stepMs: 100 });
  assert.equal(calls.get(id), 3);
  assert.equal(job.error_context!.stage, "run");
  assert.equal(job.error_context!.message, `${"漢".repeat(1024)}... (1976 more characters)`);
  const events = (await t.call("GET", `${JOBS}/${id}/events`)).body.events;
  assert.deepEqual(
    events.map((e: { event: string }) => e.event),
    ["enqueue", "claim", "fail", "claim", "fail", "claim", "fail"],
  );
  const reasons = events.filter((e: { event: string }) => e.event === "fail").map((
    e: { reason: string },
  ) => e.reason);
  assert.equal(reasons.length, 3);
  for (const reason of reasons) {
    assert.match(reason, /^漢{128}\.\.\. \(\d+ more characters\)$/);
  }
});

Deno.test("a very long error message is cut, and the job fails as any other would", async () => {
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.loud", { text: "x".repeat(40_000) });
  const job = await t.waitFor(id, (j) => j.status === "failed", { stepMs: 100 });
  assert.equal(calls.get(id), 3);
  const message = job.error_context!.message;
  assert.ok(message.startsWith("e".repeat(2048)));
  assert.ok(message.endsWith("... (21952 more characters)"), message.slice(2040));
  assert.equal(job.error, message);
  const events = (await t.call("GET", `${JOBS}/${id}/events`)).body.events;
  assert.deepEqual(
    events.map((e: { event: string }) => e.event),
    ["enqueue", "claim", "fail", "claim", "fail", "claim", "fail"],
  );
});

Deno.test("a handler that always throws fails after exactly 3 attempts", async () => {
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.flaky", { fails: 99 });
  const job = await t.waitFor(id, (j) => j.status === "failed", { stepMs: 100 });
  assert.equal(job.attempt, 3);
  assert.equal(job.retry_count, 2);
  assert.equal(calls.get(id), 3);
  const { stage, code, message, retryable } = job.error_context!;
  assert.deepEqual({ stage, code, message, retryable }, {
    stage: "run",
    code: "unknown",
    message: "flaky 3",
    retryable: true,
  });
  assert.deepEqual(await eventsOf(t, id), [
    "enqueue",
    ...["claim", "fail", "claim", "fail", "claim", "fail"],
  ]);
});

Deno.test("a PermanentError fails the job after 1 attempt", async () => {
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.flaky", { fails: 1, permanent: true });
  const job = await t.waitFor(id, (j) => j.status === "failed", { stepMs: 100 });
  assert.equal(job.attempt, 1);
  assert.equal(job.retry_count, 0);
  assert.equal(calls.get(id), 1);
  assert.equal(job.error_context?.code, "validation_error");
  assert.equal(job.error_context?.retryable, false);
});

Deno.test("no retry starts before its backoff: 1000 ms, then 2000 ms", async () => {
  await using t = await setup(HANDLERS);
  const t0 = t.clock.now();
  const id = await post(t, "test.flaky", { fails: 99 });
  let job = await t.waitFor(id, (j) => j.status === "queued" && j.attempt === 1);
  assert.equal(job.run_at, iso(t0 + 1000));
  assert.equal(job.retry_count, 1);
  t.clock.advance(999);
  await stays(t, id, (j) => j.status === "queued" && j.attempt === 1);
  assert.equal(calls.get(id), 1);
  t.clock.advance(1);
  job = await t.waitFor(id, (j) => j.status === "queued" && j.attempt === 2);
  assert.equal(job.run_at, iso(t0 + 1000 + 2000));
  t.clock.advance(1999);
  await stays(t, id, (j) => j.status === "queued" && j.attempt === 2);
  t.clock.advance(1);
  job = await t.waitFor(id, (j) => j.status === "failed");
  assert.equal(calls.get(id), 3);
});

Deno.test("a paused queued job does not run until resumed", async () => {
  await using t = await setup(HANDLERS, { start: false });
  const id = await post(t, "test.flaky", { fails: 0 });
  assert.equal((await t.call("POST", `${JOBS}/${id}/pause`)).body.status, "paused");
  t.pulse.start();
  t.clock.advance(5000);
  await stays(t, id, (j) => j.status === "paused" && j.attempt === 0);
  assert.equal(calls.get(id), undefined);
  assert.equal((await t.call("POST", `${JOBS}/${id}/resume`)).body.status, "queued");
  const job = await t.waitFor(id, (j) => j.status === "completed");
  assert.equal(job.attempt, 1);
});

Deno.test("cancelling a running job aborts its signal and refuses its late completion", async () => {
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.hold");
  const running = await t.waitFor(id, (j) => j.status === "running" && gates.has(j.id));
  const gate = gates.get(id)!;
  const res = await t.call("POST", `${JOBS}/${id}/cancel`);
  assert.equal(res.status, 200);
  assert.equal(res.body.status, "cancelled");
  for (let i = 0; i < 500 && !gate.signal.aborted; i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(gate.signal.aborted, "the handler sees ctx.signal.aborted");
  gate.release();
  for (let i = 0; i < 500 && !gate.finished; i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(gate.finished);
  await stays(t, id, (j) => j.status === "cancelled" && j.result === undefined, 20);
  const lease = { owner: running.lease!.owner, attempt: running.attempt };
  const [late] = await t.pulse.store.transitions.apply([{
    id,
    lease,
    event: () => ({ type: "complete", now: t.clock.now(), result: "late" }),
  }]);
  assert.equal(late.ok, false);
  assert.equal(!late.ok && late.code, "lease_lost");
  assert.deepEqual(await eventsOf(t, id), ["enqueue", "claim", "cancel"]);
});

Deno.test("ctx.progress, checkpoint/lastCheckpoint and spawn hold across a retry", async () => {
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.parts");
  const job = await t.waitFor(id, (j) => j.status === "completed", { stepMs: 100 });
  assert.equal(job.attempt, 2);
  assert.deepEqual(job.progress, { current: 4, total: 10 });
  assert.deepEqual(job.result, { resumed: { step: 1 } });
  type Spawned = { id: string; created: boolean }[];
  const [first, spawned1, second, spawned2] = seen.get(id)! as [unknown, Spawned, unknown, Spawned];
  assert.deepEqual([first, second], [{ checkpoint: undefined }, { checkpoint: { step: 1 } }]);
  assert.deepEqual(spawned1.map((c) => c.created), [true, true]);
  const again = spawned1.map((c) => ({ ...c, created: false }));
  assert.deepEqual(spawned2, again, "a re-run gets the same children back");
  const children = (await t.call("GET", `${JOBS}/${id}/children`)).body.jobs as Job[];
  assert.deepEqual(children.map((c) => c.id), spawned1.map((c) => c.id));
  assert.ok(children.every((c) => c.parent_job_id === id));
  for (const c of children) await t.waitFor(c.id, (j) => j.status === "completed");
});

Deno.test("ctx.data round-trips between jobs of one handler, in its own namespace", async () => {
  await using t = await setup(HANDLERS);
  const w = await post(t, "test.data", { op: "write" });
  await t.waitFor(w, (j) => j.status === "completed");
  const r = await post(t, "test.data", { op: "read" });
  const job = await t.waitFor(r, (j) => j.status === "completed");
  assert.deepEqual(job.result, {
    one: { v: "one" },
    listed: [{ key: ["k", 1], value: { v: "one" } }, { key: ["k", 2], value: [2] }],
  });
  assert.deepEqual(await t.pulse.store.data("test.data").get(["k", 1]), { v: "one" });
  assert.equal(await t.pulse.store.data("test.other").get(["k", 1]), null);
});

Deno.test("stopping the pool leaves no job running, even with a claim in flight", async () => {
  await using t = await setup([flaky]);
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) ids.push(await post(t, "test.flaky", { fails: 0 }));
  await t.pulse.stop();
  const jobs = await t.pulse.store.jobs.getMany(ids);
  for (const j of jobs) {
    assert.ok(j && (j.status === "queued" || j.status === "completed"), JSON.stringify(j));
    assert.ok(!j.lease);
  }
});

Deno.test("jobs with large payloads are claimed and settled in commits KV accepts", async () => {
  // 60 × 40 KB is ~2.4 MB of records: 30 workers claim up to 90 jobs at once, and one claim of
  // them all would pass KV's 800 KiB per commit.
  await using t = await setup(HANDLERS, { workers: 30, start: false });
  const jobs = Array.from({ length: 60 }, () => ({
    handler_name: "test.wide",
    payload: { text: "x".repeat(40_000) },
  }));
  const res = await t.call("POST", `${JOBS}/batch`, { jobs });
  assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 300));
  t.pulse.start(); // all 60 are ready at the first claim
  const ids: string[] = res.body.jobs.map((r: { job: Job }) => r.job.id);
  for (const id of ids) {
    const job = await t.waitFor(id, (j) => j.status === "completed");
    assert.equal(job.result, 40_000);
    assert.equal(calls.get(id), 1);
  }
});

Deno.test("a result that does not fit in the job record fails the job once, permanently", async () => {
  await using t = await setup(HANDLERS);
  const id = await post(t, "test.big", { text: "x".repeat(40_000) });
  const job = await t.waitFor(id, (j) => j.status !== "queued" && j.status !== "running");
  assert.equal(job.status, "failed");
  assert.equal(calls.get(id), 1);
  assert.equal(job.error_context?.stage, "result");
  assert.equal(job.error_context?.retryable, false);
});

Deno.test("a result is stored as its JSON form: what is measured is what is kept and served", async () => {
  await using t = await setup(HANDLERS);
  const expected: Record<string, unknown> = {
    map: {}, // a Map's entries have no JSON form: not 60 KB kept in the record and served as {}
    tojson: { inner: "small" }, // toJSON decides, as the API's answer would
    date: { at: "1970-01-01T00:00:00.000Z" },
  };
  for (const [kind, result] of Object.entries(expected)) {
    const id = await post(t, "test.odd", { kind });
    const job = await t.waitFor(id, (j) => j.status !== "queued" && j.status !== "running");
    assert.equal(job.status, "completed", kind);
    assert.deepEqual(job.result, result, kind); // as stored
    assert.deepEqual((await t.call("GET", `${JOBS}/${id}`)).body.result, result, kind);
    const stored = await t.kv.get(t.pulse.store.keys.job(id));
    assert.ok(JSON.stringify(stored.value).length < 2000, `${kind}: the record kept more`);
  }
});

Deno.test("a result JSON cannot hold fails the job at once, permanently, and the API still answers", async () => {
  await using t = await setup(HANDLERS);
  for (const kind of ["bigint", "cycle", "function", "nested-function", "getter-throws"]) {
    const id = await post(t, "test.odd", { kind });
    const job = await t.waitFor(id, (j) => j.status !== "queued" && j.status !== "running");
    assert.equal(job.status, "failed", kind);
    assert.equal(calls.get(id), 1, kind);
    assert.equal(job.error_context?.stage, "result", kind);
    assert.equal(job.error_context?.retryable, false, kind);
    assert.equal((await t.call("GET", `${JOBS}/${id}`)).status, 200, kind);
  }
});
