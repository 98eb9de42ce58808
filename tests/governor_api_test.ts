/**
 * The governor through the HTTP API with the pool running: reservations settled to actuals,
 * self-resume, the budget view agreeing with each job's PulseState, month rollover in the
 * budget's time zone, `pause_on_budget: false`, validation of `PUT /api/pulse/budget`, the
 * whole-queue pause, and the pauses and cancels the governor must never undo.
 */
import assert from "node:assert/strict";
import { iso } from "../src/clock.ts";
import { defineHandler, z } from "../src/mod.ts";
import type { Store } from "../src/store/mod.ts";
import type { Job } from "../src/types.ts";
import { resumeWaiting } from "../src/workers/resume.ts";
import { WINDOW_MS } from "../src/pulse/mod.ts";
import { setup, type World } from "./_setup.ts";

const JOBS = "/api/pulse/jobs";
const BUDGET = "/api/pulse/budget";
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

/** Gates that hold a `test.spend` job between its first admitted call and its cost record. */
const gates = new Map<string, { reached: boolean; open: () => void; opened: Promise<void> }>();
function gate(name: string) {
  const { promise, resolve } = Promise.withResolvers<void>();
  const g = { reached: false, open: resolve, opened: promise };
  gates.set(name, g);
  return g;
}

/**
 * For each `calls[i]` (from the checkpoint on): one admitted call of `usd`, then the `actual`
 * cost recorded and the checkpoint moved past it. Waits at `gate` after the first call.
 */
const spend = defineHandler({
  name: "test.spend",
  description: "Admitted calls with their costs, actual costs recorded",
  payload: z.object({
    calls: z.array(z.object({ usd: z.number(), actual: z.number() })),
    gate: z.string().optional(),
  }),
  async run(ctx) {
    const from = typeof ctx.lastCheckpoint === "number" ? ctx.lastCheckpoint : 0;
    for (let i = from; i < ctx.payload.calls.length; i++) {
      await ctx.pulse.call({ cost_usd: ctx.payload.calls[i].usd });
      const g = ctx.payload.gate ? gates.get(ctx.payload.gate) : undefined;
      if (g && i === from) {
        g.reached = true;
        await new Promise<void>((resolve, reject) => {
          g.opened.then(resolve);
          ctx.signal.addEventListener("abort", () => reject(new Error("taken")), { once: true });
        });
      }
      await ctx.recordCost(ctx.payload.calls[i].actual);
      await ctx.checkpoint(i + 1);
    }
    return { calls: ctx.payload.calls.length - from };
  },
});

type Call = { usd: number; actual: number };

async function enqueue(
  t: World,
  calls: Call[],
  extra: { cost_estimate?: number; gate?: string; run_at?: string } = {},
): Promise<string> {
  const { gate, ...rest } = extra;
  const res = await t.call("POST", JOBS, {
    handler_name: "test.spend",
    payload: { calls, ...(gate ? { gate } : {}) },
    ...rest,
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.id;
}

async function budget(t: World) {
  const res = await t.call("GET", BUDGET);
  assert.equal(res.status, 200);
  return res.body;
}

async function put(t: World, body: unknown) {
  const res = await t.call("PUT", BUDGET, body);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

async function events(t: World, id: string): Promise<string[]> {
  const res = await t.call("GET", `${JOBS}/${id}/events`);
  assert.equal(res.status, 200);
  return res.body.events.map((e: { event: string }) => e.event);
}

/** Bounded poll (the clock does not move) until the job reached its gate. */
async function reached(name: string) {
  for (let i = 0; i < 3000; i++) {
    if (gates.get(name)?.reached) return;
    await new Promise((r) => setTimeout(r, 1)); // yield to the engine; not a timing assumption
  }
  throw new Error(`Gate "${name}" was never reached`);
}

const isPausedFor = (reason: string) => (j: Job) =>
  j.status === "paused" && j.pulse_state?.pause_reason === reason;

Deno.test("store.governor releases what a job's actual cost leaves of its estimate, and a budget-paused job resumes on it and completes", async () => {
  await using t = await setup([spend]);
  await put(t, { daily_budget_usd: 1 });
  const g = gate("a/below-estimate");
  const a = await enqueue(t, [{ usd: 0.8, actual: 0.3 }], {
    cost_estimate: 0.8,
    gate: "a/below-estimate",
  });
  await reached("a/below-estimate");
  let b0 = await budget(t);
  assert.equal(b0.reserved_today, 0.8);
  assert.equal(b0.spend_today, 0);
  assert.equal(b0.budget_remaining, 0.2);

  const b = await enqueue(t, [{ usd: 0.5, actual: 0.5 }], { cost_estimate: 0.5 });
  await t.waitFor(b, isPausedFor("budget_exceeded"));

  g.open();
  const jobA = await t.waitFor(a, (j) => j.status === "completed");
  assert.equal(jobA.cost_actual, 0.3);
  // The clock never moved: B resumed because A's release made room, not at a new day.
  const jobB = await t.waitFor(b, (j) => j.status === "completed");
  assert.equal(jobB.cost_actual, 0.5);
  assert.deepEqual(await events(t, b), ["enqueue", "pause", "resume", "claim", "complete"]);
  b0 = await budget(t);
  assert.equal(b0.spend_today, 0.8);
  assert.equal(b0.reserved_today, 0);
  assert.ok(Math.abs(b0.budget_remaining - 0.2) < 1e-9, `remaining ${b0.budget_remaining}`);
});

Deno.test("GET /api/pulse/budget and each job's PulseState read in one moment agree, and paused jobs show is_paused and pause_reason", async () => {
  await using t = await setup([spend]);
  await put(t, { daily_budget_usd: 1, monthly_budget_usd: 5, max_calls_per_minute: 3 });
  const done = await enqueue(t, [{ usd: 0.2, actual: 0.15 }, { usd: 0.1, actual: 0.1 }], {
    cost_estimate: 0.2,
  });
  await t.waitFor(done, (j) => j.status === "completed");
  // Two calls of three this minute; the second call of this job is refused: rate_limit.
  const rated = await enqueue(t, [{ usd: 0, actual: 0 }, { usd: 0, actual: 0 }]);
  await t.waitFor(rated, isPausedFor("rate_limit"));
  // An estimate over the daily budget never fits today: paused budget_exceeded, for good.
  const broke = await enqueue(t, [{ usd: 2, actual: 2 }], { cost_estimate: 2 });
  await t.waitFor(broke, isPausedFor("budget_exceeded"));
  const user = await enqueue(t, [], { run_at: iso(t.clock.now() + 3_600_000) });
  assert.equal((await t.call("POST", `${JOBS}/${user}/pause`)).status, 200);

  const agree = async (expected: Record<string, unknown>) => {
    const b = await budget(t);
    const list = await t.call("GET", `${JOBS}?limit=100`);
    assert.equal(list.status, 200);
    const shown = new Map<string, Job>(list.body.jobs.map((j: Job) => [j.id, j]));
    for (const id of [done, rated, broke, user]) {
      const one = await t.call("GET", `${JOBS}/${id}`);
      assert.equal(one.status, 200);
      for (const s of [one.body.pulse_state, shown.get(id)!.pulse_state]) {
        for (
          const f of [
            "spend_today",
            "spend_this_month",
            "budget_remaining",
            "calls_this_minute",
            "calls_remaining",
          ]
        ) {
          assert.equal(s[f], b[f], `${id}: ${f}`);
        }
        assert.equal(s.is_paused, one.body.status === "paused", `${id}: is_paused`);
        if (!s.is_paused) assert.equal(s.pause_reason, undefined, `${id}: no pause_reason`);
      }
    }
    for (const [f, v] of Object.entries(expected)) assert.equal(b[f], v, f);
    return b;
  };

  await agree({
    spend_today: 0.25,
    spend_this_month: 0.25,
    budget_remaining: 0.75,
    calls_this_minute: 3,
    calls_remaining: 0,
  });
  const states = async (id: string) => (await t.call("GET", `${JOBS}/${id}`)).body.pulse_state;
  assert.deepEqual(
    [await states(rated), await states(broke), await states(user), await states(done)].map((
      s,
    ) => [s.is_paused, s.pause_reason]),
    [[true, "rate_limit"], [true, "budget_exceeded"], [true, "user_requested"], [false, undefined]],
  );

  // The window reopens: the rate-paused job resumes by itself from its checkpoint.
  t.clock.advance(MINUTE + 1000);
  await t.waitFor(rated, (j) => j.status === "completed");
  await agree({ spend_today: 0.25, calls_this_minute: 1, calls_remaining: 2 });
  assert.deepEqual(
    [(await states(broke)).pause_reason, (await states(user)).pause_reason],
    ["budget_exceeded", "user_requested"],
  );
});

Deno.test("store.governor charges 23:30 on the last day of a month to that month in America/New_York, and after local midnight the month starts at 0 and budget-paused jobs resume by themselves", async () => {
  await using t = await setup([spend]);
  // 2026-01-31 23:30 in New York (UTC−5) is already February 1st in UTC.
  t.clock.set(Date.UTC(2026, 1, 1, 4, 30));
  const before = await put(t, { monthly_budget_usd: 1, time_zone: "America/New_York" });
  assert.equal(before.today, "2026-01-31");
  assert.equal(before.this_month, "2026-01");

  const a = await enqueue(t, [{ usd: 0.6, actual: 0.6 }], { cost_estimate: 0.6 });
  await t.waitFor(a, (j) => j.status === "completed");
  // No estimate: its first call is reserved and recorded, its second one does not fit.
  const b = await enqueue(t, [{ usd: 0.1, actual: 0.1 }, { usd: 0.5, actual: 0.5 }]);
  const pausedB = await t.waitFor(b, isPausedFor("budget_exceeded"));
  assert.equal(pausedB.checkpoint, 1);
  // Its estimate does not fit: paused at claim.
  const c = await enqueue(t, [{ usd: 0.5, actual: 0.5 }], { cost_estimate: 0.5 });
  await t.waitFor(c, isPausedFor("budget_exceeded"));
  let view = await budget(t);
  assert.equal(view.this_month, "2026-01");
  assert.equal(view.spend_this_month, 0.7);
  assert.ok(Math.abs(view.budget_remaining - 0.3) < 1e-9);

  // Hold the queue so that the new month can be read before anything spends in it.
  assert.equal((await t.call("POST", "/api/pulse/pause")).status, 200);
  t.clock.advance(31 * MINUTE); // 00:01 on February 1st in New York
  view = await budget(t);
  assert.equal(view.today, "2026-02-01");
  assert.equal(view.this_month, "2026-02");
  assert.equal(view.spend_this_month, 0);
  assert.equal(view.spend_today, 0);
  assert.equal(view.budget_remaining, 1);
  // One jump of the clock is enough (no further steps), even when it lands mid-round.
  await t.waitFor(b, (j) => j.status === "queued");
  await t.waitFor(c, (j) => j.status === "queued");

  assert.equal((await t.call("POST", "/api/pulse/resume")).status, 200);
  const jobB = await t.waitFor(b, (j) => j.status === "completed");
  const jobC = await t.waitFor(c, (j) => j.status === "completed");
  assert.equal(jobB.cost_actual, 0.6);
  assert.equal(jobB.reservation?.month, "2026-02", "B's second run is charged to February");
  assert.equal(jobC.reservation?.month, "2026-02");
  view = await budget(t);
  assert.equal(view.spend_this_month, 1);
  assert.equal(view.reserved_this_month, 0);
  const january = await t.kv.get<{ spent: number; reserved: number }>(
    [...t.pulse.store.keys.prefix, "gov", "month", "2026-01"],
  );
  assert.deepEqual(january.value, { spent: 700_000, reserved: 0 });
});

Deno.test("pause_on_budget: false makes a job whose estimate does not fit end failed with an error_context", async () => {
  await using t = await setup([spend]);
  await put(t, { daily_budget_usd: 0.5, pause_on_budget: false });
  const id = await enqueue(t, [{ usd: 1, actual: 1 }], { cost_estimate: 1 });
  const job = await t.waitFor(id, (j) => j.status === "failed");
  assert.equal(job.attempt, 0, "never started");
  assert.equal(job.pulse_state ?? null, null);
  assert.equal(job.error_context?.stage, "admission");
  assert.equal(job.error_context?.retryable, false);
  assert.match(job.error_context?.message ?? "", /budget/i);
  assert.deepEqual(await events(t, id), ["enqueue", "fail"]);
  const view = await budget(t);
  assert.equal(view.reserved_today, 0);
  assert.equal(view.spend_today, 0);
  // A job that fits still runs.
  const fits = await enqueue(t, [{ usd: 0.4, actual: 0.4 }], { cost_estimate: 0.4 });
  await t.waitFor(fits, (j) => j.status === "completed");
});

Deno.test("pause_on_budget: false fails a running job whose call does not fit, without retry", async () => {
  await using t = await setup([spend]);
  await put(t, { daily_budget_usd: 0.5, pause_on_budget: false });
  // Estimated at 0.2 (fits at claim), but its second call needs 0.4 more than is left.
  const id = await enqueue(t, [{ usd: 0.2, actual: 0.2 }, { usd: 0.4, actual: 0.4 }], {
    cost_estimate: 0.2,
  });
  const job = await t.waitFor(id, (j) => j.status === "failed");
  assert.equal(job.attempt, 1);
  assert.equal(job.error_context?.stage, "call");
  assert.equal(job.error_context?.retryable, false);
  const view = await budget(t);
  assert.equal(view.spend_today, 0.2);
  assert.equal(view.reserved_today, 0);
});

Deno.test("PUT /api/pulse/budget answers 400 validation_error for bad values and changes nothing; null clears a limit", async () => {
  await using t = await setup([spend]);
  const start = await put(t, {
    daily_budget_usd: 0.1,
    monthly_budget_usd: 10,
    max_calls_per_minute: 5,
    time_zone: "Asia/Tokyo",
  });
  const bad: unknown[] = [
    { daily_budget_usd: -1 },
    { monthly_budget_usd: -0.01 },
    { max_calls_per_minute: -5 },
    { max_calls_per_minute: 0 },
    { max_calls_per_minute: 1.5 },
    { daily_budget_usd: "10" },
    { monthly_budget_usd: "abc" },
    { max_calls_per_minute: true },
    { daily_budget_usd: {} },
    { pause_on_budget: "no" },
    { foo: 1 },
    { daily_budget_usd: 1, foo: 1 },
    { time_zone: "Mars/Olympus_Mons" },
    { time_zone: "" },
    { time_zone: 9 },
    { handler_limits: { "test.spend": { max_calls_per_minute: -1 } } },
    { handler_limits: { "test.spend": { max_calls_per_minute: 5, y: 1 } } },
    // 300 names of 200 characters: one KV value could not hold them (was a 500).
    {
      handler_limits: Object.fromEntries(
        Array.from({ length: 300 }, (_, i) => [
          `${i}`.padStart(200, "h"),
          { max_calls_per_minute: 1 },
        ]),
      ),
    },
    '{"daily_budget_usd": 1e400}',
    "{not json",
    [],
    null,
  ];
  for (const body of bad) {
    const res = await t.call("PUT", BUDGET, body === null ? "null" : body);
    assert.equal(res.status, 400, `${JSON.stringify(body)} → ${res.status}`);
    assert.equal(res.body.error.code, "validation_error", JSON.stringify(body));
    assert.deepEqual(await budget(t), start, `${JSON.stringify(body)} changed nothing`);
  }

  // A job whose estimate is over the daily limit waits; clearing the limit lets it run.
  const id = await enqueue(t, [{ usd: 0.5, actual: 0.5 }], { cost_estimate: 0.5 });
  await t.waitFor(id, isPausedFor("budget_exceeded"));
  const cleared = await put(t, { daily_budget_usd: null });
  assert.equal(cleared.daily_budget_usd, null);
  assert.equal(cleared.monthly_budget_usd, 10, "other limits untouched");
  assert.equal(cleared.max_calls_per_minute, 5);
  assert.equal(cleared.time_zone, "Asia/Tokyo");
  await t.waitFor(id, (j) => j.status === "completed");
  const none = await put(t, { monthly_budget_usd: null, max_calls_per_minute: null });
  assert.equal(none.budget_remaining, null);
  assert.equal(none.calls_remaining, null);
  assert.equal(none.spend_today, 0.5);
  assert.deepEqual(await t.pulse.store.governor.limits(), {
    max_calls_per_minute: null,
    daily_budget_usd: null,
    monthly_budget_usd: null,
    pause_on_budget: true,
    time_zone: "Asia/Tokyo",
    handler_limits: {},
  });
});

Deno.test("POST /api/pulse/pause keeps new jobs queued and unclaimed while running jobs go on; /resume lets them run", async () => {
  await using t = await setup([spend]);
  const g = gate("f/running");
  const running = await enqueue(t, [{ usd: 0, actual: 0 }], { gate: "f/running" });
  await reached("f/running");
  const paused = await t.call("POST", "/api/pulse/pause");
  assert.equal(paused.status, 200);
  assert.equal(paused.body.queue_paused, true);
  assert.equal((await budget(t)).queue_paused, true);

  const id = await enqueue(t, [{ usd: 0, actual: 0 }]);
  g.open();
  await t.waitFor(running, (j) => j.status === "completed");
  // Many dispatcher rounds (poll intervals of the manual clock): the new job is never claimed.
  for (let i = 0; i < 50; i++) {
    t.clock.advance(1000);
    await new Promise((r) => setTimeout(r, 1)); // yield to the engine; not a timing assumption
    const job = await t.pulse.store.jobs.get(id);
    assert.equal(job?.status, "queued");
    assert.equal(job?.attempt, 0);
  }
  const resumed = await t.call("POST", "/api/pulse/resume");
  assert.equal(resumed.body.queue_paused, false);
  const job = await t.waitFor(id, (j) => j.status === "completed");
  assert.equal(job.attempt, 1);
});

Deno.test("a user_requested pause is never resumed by the governor", async () => {
  await using t = await setup([spend]);
  await put(t, { daily_budget_usd: 1, max_calls_per_minute: 2 });
  // Paused by the user while queued, and while running (holding a reservation).
  const queued = await enqueue(t, [{ usd: 0.1, actual: 0.1 }], {
    cost_estimate: 0.1,
    run_at: iso(t.clock.now() + 3_600_000),
  });
  assert.equal((await t.call("POST", `${JOBS}/${queued}/pause`)).status, 200);
  gate("g/running");
  const running = await enqueue(t, [{ usd: 0.3, actual: 0.3 }], {
    cost_estimate: 0.3,
    gate: "g/running",
  });
  await reached("g/running");
  const res = await t.call("POST", `${JOBS}/${running}/pause`);
  assert.equal(res.status, 200);
  assert.equal(res.body.status, "paused");
  assert.equal((await budget(t)).reserved_today, 0, "its reservation is released");

  // Room everywhere: new days, open windows, raised limits, extra self-resume rounds.
  for (let round = 0; round < 5; round++) {
    t.clock.advance(DAY + MINUTE);
    await put(t, { daily_budget_usd: 2 + round });
    await resumeWaiting(t.pulse.store, () => t.clock.now());
    for (const id of [queued, running]) {
      const job = await t.pulse.store.jobs.get(id);
      assert.equal(job?.status, "paused");
      assert.equal(job?.pulse_state?.pause_reason, "user_requested");
    }
    assert.deepEqual(await t.pulse.store.governor.waiting(100), []);
  }
  assert.equal((await t.call("POST", `${JOBS}/${queued}/resume`)).status, 200);
  assert.equal((await t.call("POST", `${JOBS}/${running}/resume`)).status, 200);
  gates.get("g/running")!.open();
  await t.waitFor(queued, (j) => j.status === "completed");
  await t.waitFor(running, (j) => j.status === "completed");
  assert.deepEqual(await events(t, queued), ["enqueue", "pause", "resume", "claim", "complete"]);
});

Deno.test("a cancelled job is never resumed by the self-resume loop", async () => {
  await using t = await setup([spend]);
  await put(t, { daily_budget_usd: 0.5 });
  const g = gate("h/holder");
  const holder = await enqueue(t, [{ usd: 0.4, actual: 0.1 }], {
    cost_estimate: 0.4,
    gate: "h/holder",
  });
  await reached("h/holder");
  const waiting = await enqueue(t, [{ usd: 0.3, actual: 0.3 }], { cost_estimate: 0.3 });
  await t.waitFor(waiting, isPausedFor("budget_exceeded"));
  assert.equal((await t.call("POST", `${JOBS}/${waiting}/cancel`)).status, 200);
  assert.deepEqual(await t.pulse.store.governor.waiting(100), []);

  // Room appears: the holder's actual cost leaves most of its reservation, then a new day.
  g.open();
  await t.waitFor(holder, (j) => j.status === "completed");
  const later = await enqueue(t, [{ usd: 0.3, actual: 0.3 }], { cost_estimate: 0.3 });
  await t.waitFor(later, (j) => j.status === "completed");
  t.clock.advance(DAY);
  await resumeWaiting(t.pulse.store, () => t.clock.now());
  const job = await t.pulse.store.jobs.get(waiting);
  assert.equal(job?.status, "cancelled");
  assert.deepEqual(await events(t, waiting), ["enqueue", "pause", "cancel"]);
});

Deno.test("a job cancelled between a self-resume round's read and its commit stays cancelled", async () => {
  await using t = await setup([spend], { start: false });
  const store = t.pulse.store;
  await put(t, { daily_budget_usd: 0.5 });
  const id = await enqueue(t, [{ usd: 0.6, actual: 0.6 }], { cost_estimate: 0.2 });
  // Paused for budget by a claim that did not fit (the pool is not running: claim by hand).
  await put(t, { daily_budget_usd: 0.1 });
  assert.deepEqual(await store.claims.next({ owner: "test", max: 1, lease_ms: MINUTE }), []);
  await t.waitFor(id, isPausedFor("budget_exceeded"));
  await put(t, { daily_budget_usd: 0.5 }); // room again: the round will choose it

  // The round reads the waiting job, then the cancel lands before the round commits.
  const racing: Store = {
    ...store,
    jobs: {
      ...store.jobs,
      async getMany(ids: readonly string[]) {
        const read = await store.jobs.getMany(ids);
        assert.equal((await t.call("POST", `${JOBS}/${id}/cancel`)).status, 200);
        return read;
      },
    },
  };
  const round = await resumeWaiting(racing, () => t.clock.now());
  assert.equal(round.resumed, 0);
  assert.equal((await store.jobs.get(id))?.status, "cancelled");
  assert.deepEqual(await events(t, id), ["enqueue", "pause", "cancel"]);
  // And any later round leaves it alone.
  t.clock.advance(DAY);
  assert.equal((await resumeWaiting(store, () => t.clock.now())).resumed, 0);
  assert.equal((await store.jobs.get(id))?.status, "cancelled");
});

/** Gives the running pool many chances to act while the clock stands still (bounded). */
async function idle(rounds = 200) {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 1)); // yield, not timing
}

Deno.test("a job paused because a call did not fit waits for room for that call (no resume-refuse loop)", async () => {
  await using t = await setup([spend]);
  await put(t, { daily_budget_usd: 1 });
  const a = await enqueue(t, [{ usd: 0.95, actual: 0.95 }]);
  await t.waitFor(a, (j) => j.status === "completed");
  // No estimate: $0.05 is left, its call needs $0.10.
  const b = await enqueue(t, [{ usd: 0.1, actual: 0.1 }]);
  await t.waitFor(b, isPausedFor("budget_exceeded"));
  assert.equal((await resumeWaiting(t.pulse.store, () => t.clock.now())).resumed, 0);
  await idle();
  let job = await t.pulse.store.jobs.get(b);
  assert.equal(job?.status, "paused");
  assert.equal(job?.attempt, 1, "never restarted while its call cannot fit");
  assert.deepEqual(await events(t, b), ["enqueue", "claim", "pause"]);
  // Room for the call: it resumes by itself and completes.
  await put(t, { daily_budget_usd: 1.05 });
  job = await t.waitFor(b, (j) => j.status === "completed");
  assert.equal(job.attempt, 2);
  assert.equal((await budget(t)).spend_today, 1.05);
});

Deno.test("a job paused by its handler's own rate limit waits for that window to reopen (no resume-refuse loop)", async () => {
  await using t = await setup([spend]);
  await put(t, { handler_limits: { "test.spend": { max_calls_per_minute: 1 } } });
  const a = await enqueue(t, [{ usd: 0, actual: 0 }]);
  await t.waitFor(a, (j) => j.status === "completed");
  const b = await enqueue(t, [{ usd: 0, actual: 0 }]);
  await t.waitFor(b, isPausedFor("rate_limit"));
  const round = await resumeWaiting(t.pulse.store, () => t.clock.now());
  assert.equal(round.resumed, 0);
  assert.equal(round.next_at, t.clock.now() + WINDOW_MS, "wakes when the handler's window reopens");
  await idle();
  let job = await t.pulse.store.jobs.get(b);
  assert.equal(job?.status, "paused");
  assert.equal(job?.attempt, 1, "never restarted while its handler's window is full");
  t.clock.advance(WINDOW_MS);
  job = await t.waitFor(b, (j) => j.status === "completed");
  assert.equal(job.attempt, 2);
  assert.deepEqual(await events(t, b), [
    "enqueue",
    "claim",
    "pause",
    "resume",
    "claim",
    "complete",
  ]);
});
