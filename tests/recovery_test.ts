/**
 * Recovery at the store and pool level, with the manual clock (DESIGN invariants 2 and 6): the
 * lease sweep against a late completion, stale workers, cancelled jobs against every path that
 * could bring them back, the graceful start phase, and retention.
 *
 * The pool is built stopped unless a test starts it, so every sweep, claim and prune here is
 * called by the test itself and the interleavings are the ones it sets up.
 */
import assert from "node:assert/strict";
import { iso } from "../src/clock.ts";
import { backoffMs } from "../src/lifecycle/mod.ts";
import { defineHandler, z } from "../src/mod.ts";
import { createStore, decodeJob, type NewJob, type Outcome, type Store } from "../src/store/mod.ts";
import { type Job, JOB_STATUSES, type JobStatus } from "../src/types.ts";
import { resumeWaiting } from "../src/workers/resume.ts";
import { setup, type World } from "./_setup.ts";
import { afterCommit } from "./_util.ts";

const JOBS = "/api/pulse/jobs";
const LEASE = 1000;
const DAY = 86_400_000;

/** Release gates of `test.hold` runs, by job id. */
const gates = new Map<string, () => void>();

const quick = defineHandler({
  name: "test.quick",
  description: "Completes at once",
  payload: z.object({}),
  run: () => ({ ok: true }),
});
const hold = defineHandler({
  name: "test.hold",
  description: "Waits for the test, ignoring its signal, then completes",
  payload: z.object({}),
  run: async (ctx) => {
    await new Promise<void>((release) => gates.set(ctx.job.id, release));
    return "late";
  },
});
const HANDLERS = [quick, hold];

const NEW: NewJob = {
  handler_name: "test.quick",
  payload: {},
  source: "",
  queue: "default",
  cost_estimate: 0,
  total: 0,
  priority: 0,
};

async function enqueue(store: Store, extra: Partial<NewJob> = {}): Promise<Job> {
  const [r] = await store.jobs.insert([{ ...NEW, ...extra }]);
  assert.ok(r.ok && r.created, JSON.stringify(r));
  return r.job;
}

const eventsOf = async (store: Store, id: string) =>
  (await store.jobs.events(id)).map((e) => e.event);

/** One change through the lifecycle, as an API verb or a worker would make it. */
async function apply(
  store: Store,
  id: string,
  event: Parameters<Store["transitions"]["apply"]>[0][0]["event"],
  lease?: { owner: string; attempt: number },
): Promise<Outcome> {
  const [o] = await store.transitions.apply([{ id, event, ...(lease ? { lease } : {}) }]);
  return o;
}

/** The expire change the lease sweep builds for one job (its `unless` and `backoff_ms`). */
function expireLikeSweep(store: Store, id: string, now: number): Promise<Outcome> {
  return store.transitions.apply([{
    id,
    unless: (j) =>
      j.lease && Date.parse(j.lease.expires_at) > now ? `Lease of "${id}" was renewed` : null,
    event: (j) => ({
      type: "expire",
      now,
      backoff_ms: backoffMs(j.retry_count + 1, 0.5),
      reason: `Lease of "${j.lease?.owner}" expired at ${j.lease?.expires_at}`,
    }),
  }]).then(([o]) => o);
}

async function keysUnder(kv: Deno.Kv, prefix: Deno.KvKey): Promise<Deno.KvKey[]> {
  const out: Deno.KvKey[] = [];
  for await (const e of kv.list({ prefix })) out.push(e.key);
  return out;
}

/** Status counts recounted from the job records and from the by_status index. */
async function recount(t: World) {
  const { kv, pulse: { store } } = t;
  const zero = () => Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<string, number>;
  const records = zero();
  for await (const e of kv.list({ prefix: [...store.keys.prefix, "job"] })) {
    records[decodeJob(e.key[e.key.length - 1] as string, e.value).status]++;
  }
  const index = zero();
  for (const s of JOB_STATUSES) index[s] = (await keysUnder(kv, store.keys.byStatus(s))).length;
  const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
  return {
    records: { ...records, total: total(records) },
    index: { ...index, total: total(index) },
  };
}

async function assertStatsExact(t: World) {
  const { records, index } = await recount(t);
  assert.deepEqual(index, records, "the by_status index disagrees with the job records");
  const stats = await t.call("GET", "/api/pulse/stats");
  assert.equal(stats.status, 200);
  assert.deepEqual(stats.body, records, "GET /api/pulse/stats disagrees with a recount");
}

// ---------------------------------------------------------------------------------------------
// The sweep against a late completion.

Deno.test("the sweep never overwrites a completed job", async () => {
  await using t = await setup(HANDLERS, { start: false, lease_ms: LEASE });
  const { store, pool } = t.pulse;
  const wins = { completed: 0, expired: 0 };
  const ROUNDS = 240;
  for (let round = 0; round < ROUNDS; round++) {
    const job = await enqueue(store);
    const [claimed] = await store.claims.next({ owner: "worker", max: 1, lease_ms: LEASE });
    assert.equal(claimed?.id, job.id);
    t.clock.advance(LEASE); // the lease has just expired: the sweep may take the job back now
    const now = t.clock.now();
    const lease = { owner: "worker", attempt: claimed.attempt };
    // A worker's completion needs no read (it decides on the claim's own copy), so it would
    // always win: it starts after 0–4 KV reads of its own, so the sweep's list, read and commit
    // land before, between and after its steps across the rounds.
    const reads = Math.floor(round / 4) % 5;
    const complete = async () => {
      for (let i = 0; i < reads; i++) await store.jobs.get(job.id);
      return apply(store, job.id, () => ({ type: "complete", now, result: { round } }), lease);
    };
    // Half the rounds race the pool's own sweep, half the same change applied directly; who
    // starts first alternates too, so both orders of the race are played.
    const sweep = round % 2 ? () => expireLikeSweep(store, job.id, now) : () => pool.sweepOnce();
    const [done] = round % 4 < 2
      ? await Promise.all([complete(), sweep()])
      : await Promise.all([sweep(), complete()]).then(([s, c]) => [c, s] as const);

    const after = (await store.jobs.get(job.id))!;
    const events = await eventsOf(store, job.id);
    const at = `round ${round}: ${JSON.stringify({ after, done, events })}`;
    if (after.status === "completed") {
      wins.completed++;
      assert.ok(done.ok, at);
      assert.deepEqual(events, ["enqueue", "claim", "complete"], at);
      assert.deepEqual(after.result, { round }, at);
      // It stays completed: a second sweep, or the sweep's change itself, does nothing.
      const entry = await t.kv.get(store.keys.job(job.id));
      assert.equal(await pool.sweepOnce(), 0, at);
      const again = await expireLikeSweep(store, job.id, t.clock.now());
      assert.equal(again.ok, false, at);
      assert.equal((await t.kv.get(store.keys.job(job.id))).versionstamp, entry.versionstamp, at);
      assert.deepEqual(await eventsOf(store, job.id), events, at);
    } else {
      wins.expired++;
      assert.equal(after.status, "queued", at);
      assert.equal(after.retry_count, 1, at);
      assert.equal(after.lease, null, at);
      assert.ok(!done.ok && done.code === "lease_lost", at);
      assert.deepEqual(events, ["enqueue", "claim", "expire"], at);
      // Out of the way of the next rounds' claims (the test's own change, not part of the race).
      assert.ok((await apply(store, job.id, () => ({ type: "cancel", now }))).ok, at);
    }
    assert.deepEqual(await keysUnder(t.kv, store.keys.byStatus("running")), [], at);
  }
  // Both outcomes happened, so the property was tested from both sides of the race.
  assert.ok(wins.completed > 0 && wins.expired > 0, JSON.stringify(wins));
  assert.equal(wins.completed + wins.expired, ROUNDS);
  const stats = (await t.call("GET", "/api/pulse/stats")).body;
  assert.equal(stats.completed, wins.completed);
  assert.equal(stats.cancelled, wins.expired);
  await assertStatsExact(t);
});

Deno.test("a worker's outcome decided on a stale copy of its job is decided again on a read", async (s) => {
  // Store A claims (and so holds a versionstamped copy); store B, another instance over the same
  // KV, changes the job behind A's back. A's outcome must see B's change, never overwrite it.
  const cases: Record<string, (b: Store, id: string, now: number) => Promise<unknown>> = {
    "cancelled by another instance": (b, id, now) => apply(b, id, () => ({ type: "cancel", now })),
    "lease renewed by another instance": (b, id, now) =>
      b.jobs.touch(id, { owner: "a", attempt: 1 }, () => ({
        lease: { owner: "a", expires_at: iso(now + 10 * LEASE) },
        progress: { current: 7, total: 9 },
      })),
  };
  for (const [name, change] of Object.entries(cases)) {
    await s.step(name, async () => {
      await using t = await setup(HANDLERS, { start: false, lease_ms: LEASE });
      const a = t.pulse.store;
      const b = createStore({ kv: t.kv, now: () => t.clock.now() });
      const job = await enqueue(a);
      const [claimed] = await a.claims.next({ owner: "a", max: 1, lease_ms: LEASE });
      assert.equal(claimed.id, job.id);
      const now = t.clock.now();
      await change(b, job.id, now);
      const changed = (await b.jobs.get(job.id))!;
      const done = await apply(a, job.id, () => ({ type: "complete", now, result: "a" }), {
        owner: "a",
        attempt: 1,
      });
      const after = (await a.jobs.get(job.id))!;
      if (changed.status === "cancelled") {
        assert.ok(!done.ok && done.code === "lease_lost", JSON.stringify(done));
        assert.equal(after.status, "cancelled");
        assert.deepEqual(await eventsOf(a, job.id), ["enqueue", "claim", "cancel"]);
      } else {
        assert.ok(done.ok, JSON.stringify(done));
        assert.equal(after.status, "completed");
        // B's write is kept: the outcome was decided on the job as B left it.
        assert.deepEqual(after.progress, { current: 7, total: 9 });
        assert.deepEqual(await eventsOf(a, job.id), ["enqueue", "claim", "complete"]);
      }
      await assertStatsExact(t);
    });
  }
});

Deno.test("a claim never decides on a queue flag or limits another instance changed", async () => {
  // Store A claims once (and so keeps the flags it read); store B, another instance over the same
  // KV, pauses the queue and then lowers the budget. A must see each change at its next claim.
  await using t = await setup(HANDLERS, { start: false, lease_ms: LEASE });
  const a = t.pulse.store;
  const b = createStore({ kv: t.kv, now: () => t.clock.now() });
  await enqueue(a);
  assert.equal((await a.claims.next({ owner: "a", max: 5, lease_ms: LEASE })).length, 1);

  const costly = await enqueue(a, { cost_estimate: 0.1 });
  await b.governor.setLimits({ daily_budget_usd: 0.05, pause_on_budget: true });
  assert.deepEqual(await a.claims.next({ owner: "a", max: 5, lease_ms: LEASE }), []);
  const after = (await a.jobs.get(costly.id))!;
  assert.equal(after.status, "paused", JSON.stringify(after));
  assert.equal(after.pulse_state?.pause_reason, "budget_exceeded");

  const queued = await enqueue(a);
  await b.governor.setQueuePaused(true);
  assert.deepEqual(await a.claims.next({ owner: "a", max: 5, lease_ms: LEASE }), []);
  assert.equal((await a.jobs.get(queued.id))!.status, "queued");
  await b.governor.setQueuePaused(false);
  assert.equal((await a.claims.next({ owner: "a", max: 5, lease_ms: LEASE }))[0]?.id, queued.id);
  await assertStatsExact(t);
});

Deno.test("a worker that lost its lease cannot complete the job", async (s) => {
  await s.step("store level: stale owner, stale attempt, every write it might try", async () => {
    await using t = await setup(HANDLERS, { start: false, lease_ms: LEASE });
    const { store, pool } = t.pulse;
    const job = await enqueue(store);
    const [a] = await store.claims.next({ owner: "a", max: 1, lease_ms: LEASE });
    assert.equal(a.id, job.id);
    t.clock.advance(LEASE + 1);
    assert.equal(await pool.sweepOnce(), 1);
    t.clock.advance(backoffMs(1, 0.5));
    const [b] = await store.claims.next({ owner: "b", max: 1, lease_ms: LEASE });
    assert.equal(b.id, job.id);
    assert.equal(b.attempt, 2);
    const now = t.clock.now();
    const before = await t.kv.get(store.keys.job(job.id));

    for (const stale of [{ owner: "a", attempt: 1 }, { owner: "b", attempt: 1 }]) {
      const at = JSON.stringify(stale);
      const tries: Outcome[] = [
        await apply(store, job.id, () => ({ type: "complete", now, result: "stale" }), stale),
        await apply(store, job.id, () => ({
          type: "fail",
          now,
          backoff_ms: 0,
          error_context: {
            stage: "run",
            code: "unknown",
            message: "stale",
            retryable: true,
            recoverable: true,
          },
        }), stale),
        await apply(store, job.id, () => ({ type: "requeue", now }), stale),
        await apply(
          store,
          job.id,
          () => ({ type: "pause", now, pause_reason: "rate_limit" }),
          stale,
        ),
      ];
      for (const o of tries) assert.ok(!o.ok && o.code === "lease_lost", `${at}: ${o.ok}`);
      assert.equal(await store.jobs.touch(job.id, stale, () => ({ checkpoint: "stale" })), null);
      assert.deepEqual(await store.governor.admitCall(job.id, stale, 0), {
        ok: false,
        reason: "lease_lost",
      });
    }
    // Nothing the stale worker tried was written.
    assert.equal((await t.kv.get(store.keys.job(job.id))).versionstamp, before.versionstamp);

    const done = await apply(store, job.id, () => ({ type: "complete", now, result: "b" }), {
      owner: "b",
      attempt: 2,
    });
    assert.ok(done.ok);
    assert.deepEqual(await eventsOf(store, job.id), [
      "enqueue",
      "claim",
      "expire",
      "claim",
      "complete",
    ]);
    const late = await apply(store, job.id, () => ({ type: "complete", now, result: "a" }), {
      owner: "a",
      attempt: 1,
    });
    assert.ok(!late.ok && late.code === "lease_lost");
    assert.equal((await store.jobs.get(job.id))?.result, "b");
  });

  await s.step("engine level: a real worker whose job was taken over finishes late", async () => {
    await using t = await setup(HANDLERS, { lease_ms: LEASE });
    const { store } = t.pulse;
    const res = await t.call("POST", JOBS, { handler_name: "test.hold", payload: {} });
    assert.equal(res.status, 201);
    const id = res.body.id as string;
    const running = await t.waitFor(id, (j) => j.status === "running" && gates.has(j.id));
    // Another instance's sweep finds the lease expired (the clock of this pool does not move,
    // so its heartbeat cannot renew in between) and a new owner claims the job.
    const expiry = Date.parse(running.lease!.expires_at);
    assert.ok((await expireLikeSweep(store, id, expiry)).ok);
    const taken = await apply(store, id, () => ({
      type: "claim",
      now: expiry,
      lease: { owner: "b", expires_at: iso(expiry + 10 * LEASE) },
    }));
    assert.ok(taken.ok);
    gates.get(id)!(); // the first worker's handler returns "late" now
    for (let i = 0; i < 2000 && t.pulse.pool.status().workers_active > 0; i++) {
      await new Promise((r) => setTimeout(r, 1)); // yield to the engine; not a timing assumption
    }
    assert.equal(t.pulse.pool.status().workers_active, 0);
    const job = (await store.jobs.get(id))!;
    assert.equal(job.status, "running");
    assert.equal(job.lease?.owner, "b");
    assert.equal(job.result, undefined);
    assert.deepEqual(await eventsOf(store, id), ["enqueue", "claim", "expire", "claim"]);
  });
});

// ---------------------------------------------------------------------------------------------
// Cancelled is final.

Deno.test("a cancelled job is never resumed by any path", async (s) => {
  for (const from of ["queued", "running", "paused for budget"] as const) {
    await s.step(`cancelled while ${from}`, async () => {
      await using t = await setup(HANDLERS, { start: false, lease_ms: LEASE });
      const { store, pool } = t.pulse;
      const now = () => t.clock.now();
      // A second job in the same state, not cancelled, shows that each path is live.
      const cost = from === "paused for budget" ? 5 : 0;
      const [job, control] = [
        await enqueue(store, { cost_estimate: cost }),
        await enqueue(store, { cost_estimate: cost }),
      ];
      if (from === "running") {
        const claimed = await store.claims.next({ owner: "w", max: 2, lease_ms: LEASE });
        assert.equal(claimed.length, 2);
      }
      if (from === "paused for budget") {
        // Admission finds no room for either estimate: both pause instead of being claimed.
        const limits = await t.call("PUT", "/api/pulse/budget", { daily_budget_usd: 1 });
        assert.equal(limits.status, 200);
        assert.deepEqual(await store.claims.next({ owner: "w", max: 2, lease_ms: LEASE }), []);
        for (const j of await store.jobs.getMany([job.id, control.id])) {
          assert.equal(j?.pulse_state?.pause_reason, "budget_exceeded", JSON.stringify(j));
        }
        assert.equal((await store.governor.waiting(10)).length, 2);
      }
      const cancel = await t.call("POST", `${JOBS}/${job.id}/cancel`);
      assert.equal(cancel.status, 200, JSON.stringify(cancel.body));
      assert.equal(cancel.body.status, "cancelled");
      const history = await eventsOf(store, job.id);
      assert.equal(history.at(-1), "cancel");

      const refused = async () => {
        for (const verb of ["retry", "resume", "pause", "cancel"]) {
          const r = await t.call("POST", `${JOBS}/${job.id}/${verb}`);
          assert.equal(r.status, 409, `${verb}: ${JSON.stringify(r.body)}`);
          assert.equal(r.body.error.code, "invalid_transition");
        }
      };
      await refused();
      if (from === "running") {
        // The worker that ran it learns nothing in time and tries to finish: refused.
        const late = await apply(store, job.id, () => ({ type: "complete", now: now() }), {
          owner: "w",
          attempt: 1,
        });
        assert.ok(!late.ok && late.code === "lease_lost");
      }
      if (from === "paused for budget") {
        // Room appears: the self-resume loop resumes the other waiting job, not this one.
        assert.equal(
          (await t.call("PUT", "/api/pulse/budget", { daily_budget_usd: 100 })).status,
          200,
        );
        assert.equal((await resumeWaiting(store, now)).resumed, 1);
        assert.equal((await store.jobs.get(control.id))?.status, "queued");
      }
      // Time passes: leases run out, days and a month roll over; every loop gets its turn.
      for (const step of [LEASE + 1, 10 * LEASE, DAY, 31 * DAY]) {
        t.clock.advance(step);
        await pool.sweepOnce();
        await resumeWaiting(store, now);
        const claimed = await store.claims.next({ owner: "x", max: 50, lease_ms: LEASE });
        assert.ok(!claimed.some((j) => j.id === job.id), `claimed after ${step} ms`);
        for (const j of claimed) {
          assert.ok((await apply(store, j.id, () => ({ type: "complete", now: now() }))).ok);
        }
      }
      await refused();
      const after = (await store.jobs.get(job.id))!;
      assert.equal(after.status, "cancelled");
      assert.equal(after.lease, null);
      assert.deepEqual(await eventsOf(store, job.id), history);
      // No key would bring it back: not ready, not running, not waiting for room.
      const keys = [
        ...await keysUnder(t.kv, store.keys.ready()),
        ...await keysUnder(t.kv, store.keys.byStatus("running")),
        ...await keysUnder(t.kv, store.keys.waiting()),
      ];
      assert.ok(!keys.some((k) => k.includes(job.id)), JSON.stringify(keys));
      assert.notEqual((await store.jobs.get(control.id))?.status, "cancelled");
      await assertStatsExact(t);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Graceful start.

Deno.test("after a start, jobs recovered from lost leases are spread over the graceful start phase", async () => {
  const PHASE = 10_000;
  const N = 8;
  await using t = await setup(HANDLERS, {
    start: false,
    graceful_start_phase_ms: PHASE,
    lease_ms: LEASE,
  });
  const { store, pool } = t.pulse;
  const inserted = await store.jobs.insert(Array.from({ length: N }, () => NEW));
  const ids = inserted.map((r) => (assert.ok(r.ok), r.job.id));
  // A crashed process left them running.
  const dead = await store.claims.next({ owner: "dead", max: N, lease_ms: LEASE });
  assert.equal(dead.length, N);
  t.clock.advance(LEASE + 1);
  const start = t.clock.now();
  t.pulse.start();
  await pool.sweepOnce(); // the pool's own sweep may get there first: either way, once

  const recovered = (await store.jobs.getMany(ids)).map((j) => j!);
  for (const j of recovered) {
    assert.equal(j.status, "queued", JSON.stringify(j));
    assert.equal(j.retry_count, 1);
    assert.deepEqual(await eventsOf(store, j.id), ["enqueue", "claim", "expire"]);
  }
  const runAts = recovered.map((j) => Date.parse(j.run_at));
  for (let i = 1; i < N; i++) {
    assert.ok(
      runAts[i] > runAts[i - 1],
      `not strictly increasing: ${runAts.map((r) => r - start)}`,
    );
  }
  assert.ok(runAts[0] >= start + backoffMs(1, 0.5), `${runAts[0] - start}`);
  assert.ok(runAts[N - 1] <= start + PHASE, `${runAts[N - 1] - start}`);

  // Fresh work is not slowed: a job enqueued now is claimed and run before any recovered one.
  const fresh = await t.call("POST", JOBS, { handler_name: "test.quick", payload: {} });
  assert.equal(fresh.status, 201);
  const freshDone = await t.waitFor(fresh.body.id, (j) => j.status === "completed");
  assert.equal(t.clock.now(), start);
  for (const j of await store.jobs.getMany(ids)) {
    assert.equal(j?.status, "queued");
    assert.equal(j?.attempt, 1);
  }
  // Then the recovered jobs start one by one, each at its run_at, in that order.
  for (const id of ids) await t.waitFor(id, (j) => j.status === "completed", { stepMs: 250 });
  const finished = (await store.jobs.getMany(ids)).map((j) => j!);
  const starts = finished.map((j) => Date.parse(j.started_at!));
  finished.forEach((j, i) => assert.ok(starts[i] >= runAts[i], `${j.id} started early`));
  for (let i = 1; i < N; i++) assert.ok(starts[i] > starts[i - 1]);
  assert.ok(Date.parse(freshDone.started_at!) < starts[0]);
});

// ---------------------------------------------------------------------------------------------
// Retention.

/** Claims and completes, fails, pauses or cancels one job through the lifecycle, at `now`. */
async function drive(
  store: Store,
  id: string,
  to: JobStatus | "paused-then-cancelled",
  now: number,
) {
  const must = async (o: Promise<Outcome>) => assert.ok((await o).ok);
  const claim = () =>
    must(apply(store, id, () => ({
      type: "claim",
      now,
      lease: { owner: "w", expires_at: iso(now + DAY) },
    })));
  if (to === "completed") {
    await claim();
    await must(apply(store, id, () => ({ type: "complete", now, result: 1 })));
  } else if (to === "failed") {
    await claim();
    await must(apply(store, id, () => ({
      type: "fail",
      now,
      backoff_ms: 0,
      error_context: {
        stage: "run",
        code: "validation_error",
        message: "bad",
        retryable: false,
        recoverable: false,
      },
    })));
  } else if (to === "running") {
    await claim();
  } else if (to === "paused") {
    await must(apply(store, id, () => ({ type: "pause", now, pause_reason: "user_requested" })));
  } else if (to === "cancelled") {
    await must(apply(store, id, () => ({ type: "cancel", now })));
  } else if (to === "paused-then-cancelled") {
    await must(apply(store, id, () => ({ type: "pause", now, pause_reason: "budget_exceeded" })));
    await must(apply(store, id, () => ({ type: "cancel", now })));
  }
}

/** The job a key belongs to: events and spawn links name it third, index keys last. */
function ownerOf(key: Deno.KvKey, value: unknown): string | null {
  const kind = key[1];
  if (kind === "events" || kind === "spawned") return key[2] as string;
  if (kind === "active") return value as string;
  if (
    ["job", "by_status", "by_queue", "by_handler", "by_parent"].includes(kind as string)
  ) {
    return key[key.length - 1] as string;
  }
  if (kind === "ready" || kind === "gov" && key[2] === "waiting") {
    return key[key.length - 1] as string;
  }
  return null;
}

async function entries(kv: Deno.Kv) {
  const out = new Map<string, { owner: string | null; kind: string; vs: string }>();
  for await (const e of kv.list({ prefix: [] })) {
    out.set(JSON.stringify(e.key), {
      owner: ownerOf(e.key, e.value),
      kind: String(e.key[1]),
      vs: e.versionstamp,
    });
  }
  return out;
}

Deno.test("store.jobs.prune() removes only jobs past their age, with every key they had", async () => {
  const AGES = { completed: 1000, failed: null, cancelled: 0 };
  await using t = await setup(HANDLERS, { start: false, retention: AGES });
  const { store } = t.pulse;
  const t0 = t.clock.now();
  const parent = await enqueue(store, { queue: "q.parent", source: "parent.csv" });
  const job = (extra: Partial<NewJob> = {}) => enqueue(store, extra);
  const child = (key: string) =>
    job({ parent_job_id: parent.id, spawn_key: key, queue: "q.child" });
  const gone = {
    parent,
    childDone: await child("a"),
    completed: await job({ source: "done.csv" }),
    boundary: await job(), // finished exactly `completed` ms before the prune
    cancelledQueued: await job(),
    cancelledPaused: await job({ handler_name: "test.hold" }),
  };
  const kept = {
    childActive: await child("b"),
    young: await job(), // finished 1 ms too late
    failed: await job({ queue: "q.failed" }),
    queued: await job({ source: "queued.csv" }),
    running: await job(),
    paused: await job(),
  };
  for (const j of [gone.parent, gone.childDone, gone.completed]) {
    await drive(store, j.id, "completed", t0);
  }
  await drive(store, kept.failed.id, "failed", t0);
  await drive(store, gone.cancelledQueued.id, "cancelled", t0);
  await drive(store, gone.cancelledPaused.id, "paused-then-cancelled", t0);
  await drive(store, kept.running.id, "running", t0);
  await drive(store, kept.paused.id, "paused", t0);
  await drive(store, gone.boundary.id, "completed", t0 + 1);
  await drive(store, kept.young.id, "completed", t0 + 2);
  t.clock.set(t0 + 1001);

  const goneIds = new Set(Object.values(gone).map((j) => j.id));
  const before = await entries(t.kv);
  // Every kind of key a finished job can have is there to be removed (a history this short
  // is still in the record; "removes a job whose history spans several commits" has keys).
  const kindsOf = (id: string) =>
    new Set([...before.values()].filter((e) => e.owner === id).map((e) => e.kind));
  assert.deepEqual(
    [...kindsOf(gone.childDone.id)].sort(),
    ["by_handler", "by_parent", "by_queue", "by_status", "job"],
  );
  assert.ok(kindsOf(parent.id).has("spawned"));

  // The child goes in the round after its parent's (kept while its parent is stored).
  assert.equal(await store.jobs.prune(t.clock.now(), AGES), goneIds.size - 1);
  assert.equal((await store.jobs.get(gone.childDone.id))?.status, "completed");
  assert.equal(await store.jobs.prune(t.clock.now(), AGES), 1);

  const after = await entries(t.kv);
  const expected = new Map(
    [...before].filter(([, e]) => !(e.owner && goneIds.has(e.owner)) && e.kind !== "stats"),
  );
  const actual = new Map([...after].filter(([, e]) => e.kind !== "stats"));
  assert.deepEqual(actual, expected);
  for (const j of Object.values(gone)) {
    assert.equal((await t.call("GET", `${JOBS}/${j.id}`)).status, 404);
  }
  for (const [name, j] of Object.entries(kept)) {
    const res = await t.call("GET", `${JOBS}/${j.id}`);
    assert.equal(res.status, 200, name);
    assert.equal((await t.call("GET", `${JOBS}/${j.id}/events`)).body.events.length > 0, true);
  }
  await assertStatsExact(t);
  assert.deepEqual((await t.call("GET", "/api/pulse/stats")).body, {
    queued: 2,
    running: 1,
    paused: 1,
    completed: 1,
    failed: 1,
    cancelled: 0,
    total: 6,
  });
  // A second prune at the same moment finds nothing more.
  assert.equal(await store.jobs.prune(t.clock.now(), AGES), 0);
});

/**
 * A KV handle whose `list` runs `hook` with the selector once the first entry has been read,
 * before handing it out: a way to act exactly between two steps of a store operation.
 */
function listHook(kv: Deno.Kv, hook: (s: Deno.KvListSelector) => Promise<void>): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) =>
          (async function* () {
            let first = true;
            for await (const e of target.list(selector, options)) {
              if (first) await hook(selector);
              first = false;
              yield e;
            }
          })();
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

const sameKey = (a: Deno.KvKey | undefined, b: Deno.KvKey) =>
  !!a && JSON.stringify(a) === JSON.stringify(b);

/** Where prune is interrupted: which list of the removal is being read. */
const POINTS: Record<string, (store: Store, id: string) => (s: Deno.KvListSelector) => boolean> = {
  "after the status index is read": (store) => (s) =>
    "prefix" in s && sameKey(s.prefix, store.keys.byStatus("failed")),
  "while its history is read for deletion": (store, id) => (s) =>
    "prefix" in s && sameKey(s.prefix, store.keys.events(id)),
  "while its spawn links are read for deletion": (store, id) => (s) =>
    "prefix" in s && sameKey(s.prefix, store.keys.spawned(id)),
};

Deno.test("store.jobs.prune() keeps a job retried between listing and removal, with its history", async (s) => {
  const AGES = { completed: null, failed: 0, cancelled: null };
  for (const [point, at] of Object.entries(POINTS)) {
    await s.step(`retried ${point}`, async () => {
      await using t = await setup(HANDLERS, { start: false });
      const { store } = t.pulse;
      const failed = await enqueue(store);
      await enqueue(store, { parent_job_id: failed.id, spawn_key: "k" });
      // Long enough a history that its first entries have moved from the record to a key.
      for (let i = 0; i < 3; i++) {
        for (const type of ["pause", "resume"] as const) {
          const now = t.clock.now();
          const [o] = await store.transitions.apply([{
            id: failed.id,
            event: () =>
              type === "pause"
                ? { type, now, pause_reason: "user_requested" as const }
                : { type, now },
          }]);
          assert.ok(o.ok);
        }
      }
      await drive(store, failed.id, "failed", t.clock.now());
      assert.ok((await keysUnder(t.kv, store.keys.events(failed.id))).length > 0);
      const history = await store.jobs.events(failed.id);
      const links = await keysUnder(t.kv, store.keys.spawned(failed.id));
      assert.equal(links.length, 1);
      const here = at(store, failed.id);
      let retried = false;
      // A second store over the same KV (as another instance's retention loop would be).
      const pruner = createStore({
        kv: listHook(t.kv, async (sel) => {
          if (retried || !here(sel)) return;
          retried = true;
          const r = await t.call("POST", `${JOBS}/${failed.id}/retry`);
          assert.equal(r.status, 200, JSON.stringify(r.body));
        }),
        now: () => t.clock.now(),
      });
      assert.equal(await pruner.jobs.prune(t.clock.now(), AGES), 0);
      assert.ok(retried, "the hook never ran: the test no longer reaches its point");
      const job = (await store.jobs.get(failed.id))!;
      assert.equal(job.status, "queued");
      const events = await store.jobs.events(failed.id);
      assert.deepEqual(events.slice(0, history.length), history, "history was deleted");
      assert.deepEqual(events.map((e) => e.event), [
        "enqueue",
        ...Array(3).fill(["pause", "resume"]).flat(),
        "claim",
        "fail",
        "retry",
      ]);
      assert.deepEqual(await keysUnder(t.kv, store.keys.spawned(failed.id)), links);
      await assertStatsExact(t);
    });
  }
});

Deno.test("store.jobs.prune() removes a job whose history spans several commits", async () => {
  await using t = await setup(HANDLERS, { start: false });
  const { store } = t.pulse;
  const job = await enqueue(store);
  const now = t.clock.now();
  for (let i = 0; i < 180; i++) {
    if (i) assert.ok((await apply(store, job.id, () => ({ type: "retry", now }))).ok);
    await drive(store, job.id, "failed", now);
  }
  assert.equal((await store.jobs.events(job.id)).length, 1 + 180 * 2 + 179);
  assert.equal(await store.jobs.prune(now, { completed: null, failed: 0, cancelled: null }), 1);
  const left: Deno.KvKey[] = [];
  for await (const e of t.kv.list({ prefix: [] })) {
    if (e.key.includes(job.id) || e.value === job.id) left.push(e.key);
  }
  assert.deepEqual(left, []);
  await assertStatsExact(t);
});

Deno.test("store.jobs.prune() removes many jobs per commit, and keeps one retried meanwhile", async () => {
  const AGES = { completed: null, failed: 0, cancelled: null };
  await using t = await setup(HANDLERS, { start: false });
  const { store } = t.pulse;
  const now = t.clock.now();
  const jobs: Job[] = [];
  for (let i = 0; i < 120; i++) jobs.push(await enqueue(store));
  // Some with children (spawn links) and one whose history has moved to a history key.
  for (const parent of jobs.slice(0, 5)) {
    await enqueue(store, { parent_job_id: parent.id, spawn_key: "k", queue: "q.child" });
  }
  const retried = jobs[70];
  for (let i = 0; i < 4; i++) {
    assert.ok(
      (await apply(store, retried.id, () => ({
        type: "pause",
        now,
        pause_reason: "user_requested",
      }))).ok,
    );
    assert.ok((await apply(store, retried.id, () => ({ type: "resume", now }))).ok);
  }
  for (const j of jobs) await drive(store, j.id, "failed", now);
  assert.ok((await keysUnder(t.kv, store.keys.events(retried.id))).length > 0);
  const history = await store.jobs.events(retried.id);
  // A second store over the same KV, counting commits; it retries one job while reading its
  // history keys for deletion (between the read of its record and the removal commit).
  let commits = 0;
  let hooked = false;
  const counted = new Proxy(t.kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = () => (commits++, commit());
          return op;
        };
      }
      if (prop === "list") {
        return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) =>
          (async function* () {
            const mine = "prefix" in selector &&
              sameKey(selector.prefix, store.keys.events(retried.id));
            if (mine && !hooked) {
              hooked = true;
              const r = await t.call("POST", `${JOBS}/${retried.id}/retry`);
              assert.equal(r.status, 200, JSON.stringify(r.body));
            }
            yield* target.list(selector, options);
          })();
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const pruner = createStore({ kv: counted, now: () => t.clock.now() });
  assert.equal(await pruner.jobs.prune(t.clock.now(), AGES), 119);
  assert.ok(hooked, "the hook never ran: the test no longer reaches its point");
  // 120 jobs as 100 + 20: three commits of ≤ 50, the failed one's 50 again one by one, one more.
  assert.ok(commits <= 60, `${commits} commits for 120 removals`);
  // Nothing of a removed job is left: its record, index keys, history keys and spawn links (its
  // children's own keys stay: they are queued).
  const all = await keysUnder(t.kv, [...store.keys.prefix]);
  const owns = (k: Deno.KvKey, id: string) =>
    k.at(-1) === id || ((k[1] === "events" || k[1] === "spawned") && k[2] === id);
  for (const j of jobs) {
    if (j.id !== retried.id) assert.deepEqual(all.filter((k) => owns(k, j.id)), [], j.id);
  }
  assert.equal((await store.jobs.get(retried.id))?.status, "queued");
  const events = await store.jobs.events(retried.id);
  assert.deepEqual(events.slice(0, history.length), history, "history was deleted");
  await assertStatsExact(t);
});

Deno.test("store.jobs.prune() keeps a child while its parent is stored: a retried parent never spawns it again", async () => {
  await using t = await setup(HANDLERS, { start: false });
  const { store } = t.pulse;
  const now = t.clock.now();
  const parent = await enqueue(store);
  const child = await enqueue(store, { parent_job_id: parent.id, spawn_key: "only" });
  await drive(store, child.id, "completed", now);
  await drive(store, parent.id, "failed", now);
  // The defaults' shape: completed jobs go sooner than failed ones.
  const completedOnly = { completed: 0, failed: null, cancelled: null };
  assert.equal(await store.jobs.prune(now, completedOnly), 0);
  assert.equal((await store.jobs.get(child.id))?.status, "completed");
  // Retried, the parent's spawn with the same key finds the child it spawned the first time.
  assert.equal((await t.call("POST", `${JOBS}/${parent.id}/retry`)).status, 200);
  const [again] = await store.jobs.insert([{
    ...NEW,
    parent_job_id: parent.id,
    spawn_key: "only",
  }]);
  assert.ok(again.ok && !again.created && again.job.id === child.id, JSON.stringify(again));
  // Once the parent is gone, the child goes in the next round.
  await drive(store, parent.id, "failed", now);
  const all = { completed: 0, failed: 0, cancelled: 0 };
  assert.equal(await store.jobs.prune(now, all), 1);
  assert.equal(await store.jobs.get(parent.id), null);
  assert.equal(await store.jobs.prune(now, all), 1);
  assert.equal(await store.jobs.get(child.id), null);
  await assertStatsExact(t);
});

Deno.test("a job with more links than one commit takes is removed whole or kept whole", async (s) => {
  const AGES = { completed: null, failed: 0, cancelled: null };
  const LINKS = 1000; // over the 900 mutations a removal commit carries
  async function parentWithLinks(t: World) {
    const { store } = t.pulse;
    const parent = await enqueue(store);
    for (let i = 0; i < LINKS; i++) {
      await enqueue(store, { parent_job_id: parent.id, spawn_key: `k${i}`, queue: "q.child" });
    }
    await drive(store, parent.id, "failed", t.clock.now());
    assert.equal((await keysUnder(t.kv, store.keys.spawned(parent.id))).length, LINKS);
    return parent;
  }
  const leftOf = async (t: World, id: string) => ({
    links: (await keysUnder(t.kv, t.pulse.store.keys.spawned(id))).length,
    history: (await keysUnder(t.kv, t.pulse.store.keys.events(id))).length,
    markers: (await keysUnder(t.kv, t.pulse.store.keys.removing())).length,
  });

  await s.step("retried right after retention's first commit", async () => {
    await using t = await setup(HANDLERS, { start: false });
    const parent = await parentWithLinks(t);
    let answer = 0;
    const pruner = createStore({
      kv: afterCommit(t.kv, 1, async () => {
        answer = (await t.call("POST", `${JOBS}/${parent.id}/retry`)).status;
      }),
      now: () => t.clock.now(),
    });
    const removed = await pruner.jobs.prune(t.clock.now(), AGES);
    assert.notEqual(answer, 0, "the hook never ran");
    const job = await t.pulse.store.jobs.get(parent.id);
    // Either the retry came first and the job keeps every link, or the job is gone whole.
    if (job) {
      assert.equal(removed, 0);
      assert.equal(job.status, "queued");
      assert.deepEqual(await leftOf(t, parent.id), { links: LINKS, history: 0, markers: 0 });
    } else {
      assert.equal(removed, 1);
      assert.equal(answer, 404);
      assert.deepEqual(await leftOf(t, parent.id), { links: 0, history: 0, markers: 0 });
    }
    await assertStatsExact(t);
  });

  await s.step("the process stops after the record's commit: the next prune finishes", async () => {
    await using t = await setup(HANDLERS, { start: false });
    const parent = await parentWithLinks(t);
    const dying = createStore({
      kv: afterCommit(t.kv, 1, () => Promise.reject(new Error("process stopped"))),
      now: () => t.clock.now(),
    });
    await assert.rejects(dying.jobs.prune(t.clock.now(), AGES), /process stopped/);
    assert.equal(await t.pulse.store.jobs.get(parent.id), null, "the record goes first");
    assert.equal((await leftOf(t, parent.id)).markers, 1);
    assert.equal(await t.pulse.store.jobs.prune(t.clock.now(), AGES), 0);
    assert.deepEqual(await leftOf(t, parent.id), { links: 0, history: 0, markers: 0 });
    await assertStatsExact(t);
  });
});

Deno.test("graceful start spreads more recovered jobs than one sweep page evenly", async () => {
  const PHASE = 10_000;
  const N = 120;
  await using t = await setup(HANDLERS, {
    start: false,
    graceful_start_phase_ms: PHASE,
    lease_ms: LEASE,
  });
  const { store, pool } = t.pulse;
  await store.jobs.insert(Array.from({ length: N }, () => NEW));
  let dead = 0;
  while (dead < N) {
    dead += (await store.claims.next({ owner: "dead", max: 50, lease_ms: LEASE })).length;
  }
  t.clock.advance(LEASE + 1);
  t.pulse.start();
  await pool.sweepOnce();
  const page = await store.jobs.list({ status: "queued" }, 1000);
  assert.equal(page.jobs.length, N);
  const runAts = new Set(page.jobs.map((j) => j.run_at));
  assert.equal(runAts.size, N, "each recovered job gets its own moment");
});
