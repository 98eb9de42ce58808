/**
 * Property test of the governor at the store level (DESIGN invariants 3, 4, 5): random
 * interleavings of enqueue, claim, admitted calls (alone or several at once), cost records,
 * completion, cancel, clock moves and self-resume rounds never let a budget period's
 * spend + reserved pass its limit, keep every ledger's `reserved` equal to what the jobs charged
 * to that period hold (and its `spent` equal to what was recorded there), and never admit more
 * than `max_calls_per_minute` calls in any 60 seconds.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { defineHandler, z } from "../src/mod.ts";
import { periodOf, toMicros } from "../src/pulse/mod.ts";
import { type CallOutcome, decodeJob, type Store } from "../src/store/mod.ts";
import type { Job, Limits } from "../src/types.ts";
import { resumeWaiting } from "../src/workers/resume.ts";
import { busiestMinute } from "./_util.ts";
import { setup } from "./_setup.ts";

const OWNER = "property-owner";
const SECOND = 1000;
const DAY = 24 * 3600 * SECOND;

const noop = defineHandler({
  name: "test.noop",
  description: "Never runs: the property drives the store directly",
  payload: z.unknown(),
  run: () => null,
});

type Op =
  | { k: "enqueue"; usd: number }
  | { k: "claim"; max: number }
  | { k: "call"; pick: number; micros: number }
  | { k: "burst"; calls: { pick: number; micros: number }[]; claim: number }
  | { k: "record"; pick: number; percent: number }
  | { k: "complete"; pick: number }
  | { k: "cancel"; pick: number }
  | { k: "advance"; ms: number }
  | { k: "resume" };

const usd = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 0, max: 500_000 }).map((m) => m / 1e6),
  fc.double({ min: 0, max: 0.5, noNaN: true, noDefaultInfinity: true }),
);
const pick = fc.nat({ max: 1000 });
const callMicros = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 300_000 }) },
);
const kind = <K extends Op["k"]>(k: K) => fc.constant(k);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: kind("enqueue"), usd }) },
  { weight: 3, arbitrary: fc.record({ k: kind("claim"), max: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 6, arbitrary: fc.record({ k: kind("call"), pick, micros: callMicros }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: kind("burst"),
      calls: fc.array(fc.record({ pick, micros: callMicros }), { minLength: 2, maxLength: 6 }),
      claim: fc.integer({ min: 0, max: 3 }),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({ k: kind("record"), pick, percent: fc.integer({ min: 1, max: 100 }) }),
  },
  { weight: 1, arbitrary: fc.record({ k: kind("complete"), pick }) },
  { weight: 1, arbitrary: fc.record({ k: kind("cancel"), pick }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: kind("advance"),
      ms: fc.oneof(
        fc.integer({ min: 1, max: 90 }).map((s) => s * SECOND),
        fc.integer({ min: 58_000, max: 61_000 }), // around the edge of the rate window
        fc.integer({ min: 1, max: 48 }).map((h) => h * 3600 * SECOND),
        fc.integer({ min: 1, max: 40 }).map((d) => d * DAY),
      ),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: kind("resume") }) },
);

/** A budget in µ$ (often a small one, so that refusals happen), or none. */
const budget = (max: number) =>
  fc.option(fc.oneof(fc.integer({ min: 0, max: max / 5 }), fc.integer({ min: 0, max })), {
    nil: null,
  });
const limitsArb = fc.record({
  daily: budget(1_500_000),
  monthly: budget(4_000_000),
  calls: fc.option(fc.integer({ min: 1, max: 8 }), { nil: null }),
  time_zone: fc.constantFrom(
    "UTC",
    "America/New_York",
    "Asia/Tokyo",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
  ),
});

async function allJobs(kv: Deno.Kv, store: Store): Promise<Job[]> {
  const out: Job[] = [];
  for await (const e of kv.list({ prefix: store.keys.jobs() })) {
    out.push(decodeJob(e.key[e.key.length - 1] as string, e.value));
  }
  return out;
}

async function ledgers(kv: Deno.Kv, store: Store, kind: "day" | "month") {
  const out = new Map<string, { spent: number; reserved: number }>();
  const prefix = [...store.keys.prefix, "gov", kind];
  for await (const e of kv.list<{ spent: number; reserved: number }>({ prefix })) {
    out.set(e.key[e.key.length - 1] as string, e.value);
  }
  return out;
}

interface Model {
  limit: { day: number | null; month: number | null; calls: number | null };
  time_zone: string;
  /** Clock instants of every admitted call. */
  admitted: number[];
  /** µ$ recorded, or admitted and unrecorded when its run stopped, per "day/<p>"/"month/<p>". */
  recorded: Map<string, number>;
  /** µ$ admitted to a running job's current attempt and not yet recorded. */
  owed: (job: Job) => number;
}

/** Every invariant the property holds after each op. */
async function check(kv: Deno.Kv, store: Store, m: Model, trace: string) {
  const jobs = await allJobs(kv, store);
  for (const kind of ["day", "month"] as const) {
    const max = m.limit[kind];
    const held = new Map<string, number>();
    for (const j of jobs) {
      const r = j.reservation;
      if (r) held.set(r[kind], (held.get(r[kind]) ?? 0) + r.reserved_micros);
    }
    const found = await ledgers(kv, store, kind);
    for (const [period, l] of found) {
      assert.ok(
        Number.isSafeInteger(l.spent) && Number.isSafeInteger(l.reserved),
        `${kind} ${period}: integer micro-dollars (${trace})`,
      );
      if (max !== null) {
        assert.ok(
          l.spent + l.reserved <= max,
          `${kind} ${period}: spent ${l.spent} + reserved ${l.reserved} > limit ${max} (${trace})`,
        );
      }
      assert.equal(
        l.reserved,
        held.get(period) ?? 0,
        `${kind} ${period}: ledger reserved vs jobs' reservations (${trace})`,
      );
      assert.equal(
        l.spent,
        m.recorded.get(`${kind}/${period}`) ?? 0,
        `${kind} ${period}: ledger spent vs recorded (${trace})`,
      );
    }
    for (const [period, n] of held) {
      if (n > 0) {
        assert.ok(found.has(period), `${kind} ${period} held but has no ledger (${trace})`);
      }
    }
  }
  for (const j of jobs) {
    const r = j.reservation;
    if (!r) continue;
    assert.ok(r.reserved_micros >= 0 && r.admitted_micros >= 0, `job ${j.id}: ${trace}`);
    if (j.status === "running") {
      // Charged to the period in which this run was admitted, never to an earlier run's.
      const claimed = periodOf(Date.parse(j.started_at!), m.time_zone);
      assert.ok(r.day >= claimed.day && r.month >= claimed.month, `job ${j.id}: ${trace}`);
      assert.equal(r.admitted_micros, m.owed(j), `job ${j.id}: admitted, unrecorded (${trace})`);
      assert.ok(r.reserved_micros >= r.admitted_micros, `job ${j.id} holds its calls (${trace})`);
    } else {
      assert.equal(r.reserved_micros, 0, `job ${j.id} (${j.status}) still holds money (${trace})`);
    }
  }
  if (m.limit.calls !== null) {
    const worst = busiestMinute(m.admitted);
    assert.ok(worst <= m.limit.calls, `${worst} calls in 60 s > ${m.limit.calls} (${trace})`);
  }
  // The waiting index is exactly the jobs paused for budget or rate.
  const waiting = (await store.governor.waiting(10_000)).map((w) => w.id);
  const expected = jobs.filter((j) =>
    j.status === "paused" && j.pulse_state?.pause_reason !== "user_requested"
  ).map((j) => j.id);
  assert.deepEqual(waiting.sort(), expected.sort(), `waiting index (${trace})`);
}

Deno.test("store.governor never lets spend + reserved pass a budget, keeps its ledgers exact and never admits more than the limit in 60 s", async () => {
  await fc.assert(
    fc.asyncProperty(
      limitsArb,
      fc.integer({ min: 0, max: 364 * 24 }),
      fc.array(op, { minLength: 10, maxLength: 80, size: "max" }),
      async (lim, startHour, ops) => {
        await using t = await setup([noop], { start: false });
        const store = t.pulse.store;
        t.clock.set(Date.UTC(2026, 0, 1) + startHour * 3600 * SECOND);
        const limits: Partial<Limits> = {
          daily_budget_usd: lim.daily === null ? null : lim.daily / 1e6,
          monthly_budget_usd: lim.monthly === null ? null : lim.monthly / 1e6,
          max_calls_per_minute: lim.calls,
          time_zone: lim.time_zone,
        };
        await store.governor.setLimits(limits);
        const ids: string[] = [];
        const owed = new Map<string, { attempt: number; micros: number }>();
        const owedOf = (j: Job) => {
          const o = owed.get(j.id);
          return o && o.attempt === j.attempt && j.status === "running" ? o.micros : 0;
        };
        const m: Model = {
          limit: { day: lim.daily, month: lim.monthly, calls: lim.calls },
          time_zone: lim.time_zone,
          admitted: [],
          recorded: new Map(),
          owed: owedOf,
        };
        /**
         * A run taken away (cancelled, paused) with admitted but unrecorded money has it counted
         * as spent in its period (a late record would replace it): the model follows.
         */
        const settleStopped = async () => {
          for (const [id, o] of owed) {
            if (o.micros <= 0) continue;
            const j = await store.jobs.get(id);
            if (j?.status === "running" && j.attempt === o.attempt) continue;
            const r = j?.reservation;
            if (r) {
              for (const key of [`day/${r.day}`, `month/${r.month}`]) {
                m.recorded.set(key, (m.recorded.get(key) ?? 0) + o.micros);
              }
            }
            owed.set(id, { attempt: o.attempt, micros: 0 });
          }
        };
        const running = async () =>
          (await store.jobs.getMany(ids)).filter((j): j is Job => j?.status === "running");
        const choose = <T>(xs: T[], n: number) => xs.length ? xs[n % xs.length] : undefined;
        const claim = async (max: number) => {
          const jobs = await store.claims.next({ owner: OWNER, max, lease_ms: 365 * DAY });
          for (const j of jobs) {
            assert.equal(j.status, "running");
            owed.set(j.id, { attempt: j.attempt, micros: 0 });
          }
        };
        /** One admitted call for `j`; updates the model, checks a refusal's consequences. */
        const call = async (j: Job, micros: number, trace: string) => {
          const out: CallOutcome = await store.governor.admitCall(
            j.id,
            { owner: OWNER, attempt: j.attempt },
            micros,
          );
          if (out.ok) {
            m.admitted.push(t.clock.now());
            const o = owed.get(j.id)!;
            owed.set(j.id, { attempt: j.attempt, micros: o.micros + micros });
            return;
          }
          const after = await store.jobs.get(j.id);
          if (out.reason === "lease_lost") {
            // Only when a call of the same burst paused the job first.
            assert.notEqual(after?.status, "running", trace);
            return;
          }
          assert.equal(after?.status, "paused", trace);
          assert.equal(after?.pulse_state?.pause_reason, out.reason, trace);
          if (out.reason === "rate_limit") assert.ok(lim.calls !== null, trace);
          else {
            assert.ok(lim.daily !== null || lim.monthly !== null, trace);
            assert.ok(micros > 0, `a free call is never refused for money (${trace})`);
          }
        };

        for (const [step, o] of ops.entries()) {
          const trace = `step ${step}: ${JSON.stringify(o)}`;
          switch (o.k) {
            case "enqueue": {
              const [r] = await store.jobs.insert([{
                handler_name: "test.noop",
                source: "",
                queue: "default",
                cost_estimate: o.usd,
                total: 0,
                priority: 0,
              }]);
              assert.ok(r.ok);
              ids.push(r.job.id);
              break;
            }
            case "claim":
              await claim(o.max);
              break;
            case "call": {
              const j = choose(await running(), o.pick);
              if (j) await call(j, o.micros, trace);
              break;
            }
            case "burst": {
              // Several calls (maybe of one job) and a claim race for the same checked keys.
              const jobs = await running();
              const work: Promise<void>[] = o.calls.flatMap((c) => {
                const j = choose(jobs, c.pick);
                return j ? [call(j, c.micros, trace)] : [];
              });
              if (o.claim) work.push(claim(o.claim));
              await Promise.all(work);
              break;
            }
            case "record": {
              // A well-behaved handler records at most what it was admitted and not yet recorded.
              const j = choose(await running(), o.pick);
              const micros = j ? Math.floor(owedOf(j) * o.percent / 100) : 0;
              if (!j || micros <= 0) break;
              const after = await store.governor.recordCost(j.id, micros);
              assert.ok(after?.reservation, trace);
              const r = after.reservation;
              for (const key of [`day/${r.day}`, `month/${r.month}`]) {
                m.recorded.set(key, (m.recorded.get(key) ?? 0) + micros);
              }
              owed.set(j.id, { attempt: j.attempt, micros: owedOf(j) - micros });
              assert.equal(toMicros(after.cost_actual), toMicros(j.cost_actual) + micros, trace);
              break;
            }
            case "complete": {
              const j = choose(await running(), o.pick);
              if (!j) break;
              const [r] = await store.transitions.apply([{
                id: j.id,
                lease: { owner: OWNER, attempt: j.attempt },
                event: () => ({ type: "complete", now: t.clock.now() }),
              }]);
              assert.ok(r.ok, trace);
              // A run that ended by itself is settled to what it recorded: the rest is released.
              owed.set(j.id, { attempt: j.attempt, micros: 0 });
              break;
            }
            case "cancel": {
              const id = choose(ids, o.pick);
              if (!id) break;
              await store.transitions.apply([{
                id,
                event: () => ({ type: "cancel", now: t.clock.now() }),
              }]);
              break;
            }
            case "advance":
              t.clock.advance(o.ms);
              break;
            case "resume":
              await resumeWaiting(store, () => t.clock.now());
              break;
          }
          await settleStopped();
          await check(t.kv, store, m, trace);
        }
      },
    ),
    // Shrinking a failure stops after a minute (it reports the smallest case found so far).
    { numRuns: 80, interruptAfterTimeLimit: 60_000 },
  );
});

Deno.test("store.governor keeps money a cancelled job was admitted until it reports it", async () => {
  await using t = await setup([noop], { start: false });
  const store = t.pulse.store;
  await store.governor.setLimits({ daily_budget_usd: 1 });
  const job = (usd: number) => ({
    handler_name: "test.noop",
    source: "",
    queue: "default",
    cost_estimate: usd,
    total: 0,
    priority: 0,
  });
  const [a] = await store.jobs.insert([job(0)]);
  assert.ok(a.ok);
  const [claimedA] = await store.claims.next({ owner: OWNER, max: 1, lease_ms: DAY });
  const lease = { owner: OWNER, attempt: claimedA.attempt };
  assert.deepEqual(await store.governor.admitCall(claimedA.id, lease, 1_000_000), { ok: true });
  await store.transitions.apply([{
    id: a.job.id,
    event: () => ({ type: "cancel", now: t.clock.now() }),
  }]);
  // A's $1 call may have been paid: B's $1 estimate must not fit beside it.
  const [b] = await store.jobs.insert([job(1)]);
  assert.ok(b.ok);
  assert.deepEqual(await store.claims.next({ owner: OWNER, max: 1, lease_ms: DAY }), []);
  assert.equal((await store.jobs.get(b.job.id))?.pulse_state?.pause_reason, "budget_exceeded");
  // A's handler reports the $1 late: it replaces the assumed spend, it does not add to it.
  await store.governor.recordCost(a.job.id, 1_000_000);
  const snap = await store.governor.snapshot();
  assert.equal(snap.day.ledger.spent, 1_000_000);
  assert.equal(snap.day.ledger.reserved, 0);
  assert.equal((await store.jobs.get(a.job.id))?.cost_actual, 1);
});
