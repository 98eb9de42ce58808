/**
 * The store's copy of the ready index (src/store/_ready.ts): a claim finds jobs this store
 * enqueued without listing KV, and never misses one, whoever wrote it. Stores here share one
 * real Deno.Kv; the spy only counts and holds `list` calls.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { createManualClock } from "../src/clock.ts";
import { createStore, type NewJob, type Store } from "../src/store/mod.ts";

const T0 = Date.UTC(2026, 0, 1);
const item = (run_at?: number): NewJob => ({
  handler_name: "t",
  source: "",
  queue: "default",
  cost_estimate: 0,
  total: 0,
  priority: 0,
  ...(run_at === undefined ? {} : { run_at }),
});
const lease = { owner: "test", lease_ms: 60_000 };

/** A Deno.Kv whose `list` calls are counted, and held at `gate` after KV answered them. */
function spy(kv: Deno.Kv) {
  const s = { lists: 0, gate: null as Promise<void> | null };
  const kvSpy = new Proxy(kv, {
    get(target, p) {
      if (p === "list") {
        return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
          s.lists++;
          return (async function* () {
            const entries = await Array.fromAsync(target.list(selector, options));
            if (s.gate) await s.gate; // KV has answered: what happens now is after the snapshot
            yield* entries;
          })();
        };
      }
      const v = Reflect.get(target, p);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { kv: kvSpy as Deno.Kv, s };
}

/** Reports the wake counter as it is now, as the pool's watch would. */
async function observe(kv: Deno.Kv, store: Store) {
  store.claims.observe(await kv.get<Deno.KvU64>(store.keys.wake()));
}

async function insert(store: Store, run_at?: number) {
  const [r] = await store.jobs.insert([item(run_at)]);
  assert.ok(r.ok);
  return r.job.id;
}

/** What KV holds: ids of the queued jobs due by `now`, in claim order. */
async function dueInKv(kv: Deno.Kv, store: Store, now: number) {
  const ids: string[] = [];
  const prefix = store.keys.ready();
  for await (const e of kv.list({ start: prefix, end: store.keys.readyUntil(now + 1) })) {
    ids.push(e.key.at(-1) as string);
  }
  return ids;
}

/**
 * Two stores over one KV: A's copy of the ready index is whole (observed and listed once), B
 * writes as another instance would.
 */
async function twoStores() {
  const kv = await Deno.openKv(":memory:");
  const clock = createManualClock(T0);
  const a = createStore({ kv, now: clock.now });
  const b = createStore({ kv, now: clock.now });
  await observe(kv, a);
  await a.claims.ready(10);
  return { kv, clock, a, b, [Symbol.asyncDispose]: () => Promise.resolve(kv.close()) };
}

Deno.test("a claim finds the jobs this store enqueued without listing KV again", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: watched, s } = spy(kv);
  const clock = createManualClock(T0);
  const store = createStore({ kv: watched, now: clock.now });
  await observe(kv, store);
  assert.deepEqual((await store.claims.ready(10)).ids, []);
  assert.equal(s.lists, 1, "the first claim lists the ready index");
  const a = await insert(store);
  const b = await insert(store);
  const later = await insert(store, T0 + 5_000);
  await observe(kv, store); // the watch reports the store's own bumps
  assert.deepEqual((await store.claims.ready(10)).ids, [a, b]);
  assert.equal(await store.claims.nextRunAt(), T0);
  const { claimed } = await store.claims.take([a, b], lease);
  assert.deepEqual(claimed.map((j) => j.id), [a, b]);
  assert.deepEqual((await store.claims.ready(10)).ids, []);
  assert.equal(await store.claims.nextRunAt(), T0 + 5_000);
  clock.advance(5_000);
  assert.deepEqual((await store.claims.ready(10)).ids, [later]);
  assert.equal(s.lists, 1, "nothing was listed after the first claim");
});

Deno.test("a job another store enqueued is claimed once the watch shows a bump not ours", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: watched, s } = spy(kv);
  const clock = createManualClock(T0);
  const a = createStore({ kv: watched, now: clock.now });
  const b = createStore({ kv, now: clock.now });
  await observe(kv, a);
  await a.claims.ready(10);
  const mine = await insert(a);
  const theirs = await insert(b);
  await observe(kv, a);
  const both = [mine, theirs].sort(); // one run_at: KV orders them by id
  assert.deepEqual((await a.claims.ready(10)).ids, both);
  assert.equal(s.lists, 2, "the stranger's bump made the claim list KV");
  assert.deepEqual((await a.claims.ready(10)).ids, both, "and the copy is whole again");
  assert.equal(s.lists, 2);
});

Deno.test("a job another store took away is dropped from the copy, without a claim loop", async () => {
  await using w = await twoStores();
  const { kv, clock, a, b } = w;
  const cancelled = await insert(a);
  const claimed = await insert(a);
  const [c] = await b.transitions.apply([{
    id: cancelled,
    event: () => ({ type: "cancel", now: clock.now() }),
  }]);
  assert.ok(c.ok);
  assert.deepEqual((await b.claims.next({ ...lease, max: 1 })).map((j) => j.id), [claimed]);
  // Neither bumps the wake counter: the copy still lists both, and the claim finds out.
  await observe(kv, a);
  const stale = await a.claims.ready(10);
  assert.deepEqual(stale.ids, [cancelled, claimed]);
  const taken = await a.claims.take(stale.ids, lease);
  assert.deepEqual(taken.claimed, []);
  assert.deepEqual((await a.claims.ready(10)).ids, [], "the next claim lists KV and finds none");
});

Deno.test("own commits that land while the ready index is listed are not lost", async (t) => {
  for (const what of ["an enqueue", "a claim"] as const) {
    await t.step(what, async () => {
      using kv = await Deno.openKv(":memory:");
      const { kv: watched, s } = spy(kv);
      const clock = createManualClock(T0);
      const store = createStore({ kv: watched, now: clock.now });
      const first = await insert(store);
      await observe(kv, store);
      let release = () => {};
      s.gate = new Promise((r) => release = r);
      const listing = store.claims.ready(10); // KV answers, then the answer is held
      while (s.lists === 0) await Promise.resolve();
      const second = what === "an enqueue" ? await insert(store) : null;
      if (what === "a claim") assert.equal((await store.claims.take([first], lease)).changed, 1);
      s.gate = null;
      release();
      assert.deepEqual((await listing).ids, [first], "the listing saw KV before the commit");
      await observe(kv, store);
      const expected = second ? [first, second] : [];
      assert.deepEqual((await store.claims.ready(10)).ids, expected);
      assert.deepEqual(await dueInKv(kv, store, clock.now()), expected);
      assert.equal(s.lists, 1, "the copy answered");
    });
  }
});

Deno.test("the copy never hides a due job, whoever enqueued, claimed or cancelled it", async () => {
  type Step =
    | { op: "insert"; by: 0 | 1; delay: number }
    | { op: "claim"; by: 0 | 1; max: number }
    | { op: "cancel" | "pause" | "resume"; by: 0 | 1; pick: number }
    | { op: "advance"; ms: number }
    | { op: "observe" };
  const by = fc.constantFrom<0 | 1>(0, 1);
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ op: fc.constant("insert" as const), by, delay: fc.constantFrom(0, 0, 10, 50) }),
    fc.record({ op: fc.constant("claim" as const), by, max: fc.integer({ min: 1, max: 3 }) }),
    fc.record({ op: fc.constantFrom("cancel" as const, "pause", "resume"), by, pick: fc.nat() }),
    fc.record({ op: fc.constant("advance" as const), ms: fc.constantFrom(5, 20) }),
    fc.constant({ op: "observe" as const }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(step, { maxLength: 40 }), async (steps) => {
      using kv = await Deno.openKv(":memory:");
      const clock = createManualClock(T0);
      const stores = [createStore({ kv, now: clock.now }), createStore({ kv, now: clock.now })];
      const [a] = stores;
      await observe(kv, a);
      for (const s of steps) {
        if (s.op === "insert") await insert(stores[s.by], clock.now() + s.delay);
        if (s.op === "claim") {
          const { ids } = await stores[s.by].claims.ready(s.max);
          await stores[s.by].claims.take(ids, lease);
        }
        if (s.op === "cancel" || s.op === "pause") {
          const due = await dueInKv(kv, a, clock.now() + 100);
          if (due.length) {
            await stores[s.by].transitions.apply([{
              id: due[s.pick % due.length],
              event: () =>
                s.op === "cancel"
                  ? { type: "cancel" as const, now: clock.now() }
                  : { type: "pause" as const, now: clock.now(), pause_reason: "user_requested" },
            }]);
          }
        }
        if (s.op === "resume") {
          const paused = await Array.fromAsync(kv.list({ prefix: a.keys.byStatus("paused") }));
          if (paused.length) {
            await stores[s.by].transitions.apply([{
              id: paused[s.pick % paused.length].key.at(-1) as string,
              event: () => ({ type: "resume", now: clock.now() }),
            }]);
          }
        }
        if (s.op === "advance") clock.advance(s.ms);
        if (s.op === "observe") await observe(kv, a);
      }
      // Once the watch has reported every bump: every due job is offered, in KV's order; any
      // other id offered is one another store took away, which the claim then finds out.
      await observe(kv, a);
      const truth = await dueInKv(kv, a, clock.now());
      const offered = (await a.claims.ready(90)).ids;
      assert.equal(new Set(offered).size, offered.length, `offered twice: ${offered}`);
      assert.deepEqual(offered.filter((id) => truth.includes(id)), truth);
      // Any other id offered is a job taken away elsewhere, or queued again to run later.
      const extra = offered.filter((id) => !truth.includes(id));
      for (const job of await a.jobs.getMany(extra)) {
        assert.ok(job?.status !== "queued" || Date.parse(job.run_at) > clock.now());
      }
      if (extra.length) {
        await a.claims.take(extra, lease);
        assert.deepEqual((await a.claims.ready(90)).ids, truth);
      }
    }),
    { numRuns: 150 },
  );
});

Deno.test("a claim decides on the record its listing carried only while that record is current", async (t) => {
  using kv = await Deno.openKv(":memory:");
  const clock = createManualClock(T0);
  const store = createStore({ kv, now: clock.now });
  const id = await insert(store);
  const listed = await store.claims.ready(10);
  assert.deepEqual(listed.ids, [id]);
  assert.equal(listed.rows?.get(id)?.value.status, "queued", "the listing carried the record");
  await t.step("a record written since (here: money recorded) is read again", async () => {
    // recordCost writes the record and not the ready key: the copy the listing carried is old.
    assert.ok(await store.governor.recordCost(id, 1_500_000));
    const { claimed } = await store.claims.take(listed.ids, lease, listed.rows);
    assert.equal(claimed.length, 1);
    assert.equal(claimed[0].cost_actual, 1.5, "the claim kept what was written after the listing");
    assert.equal((await store.jobs.get(id))?.cost_actual, 1.5);
  });
  await t.step("a ready key written before records were copied into it is read", async () => {
    const old = await insert(store);
    const key = (await Array.fromAsync(kv.list({ prefix: store.keys.ready() })))[0].key;
    await kv.set(key, old); // the value an earlier version wrote: the id alone
    const { ids, rows } = await store.claims.ready(10);
    assert.deepEqual(ids, [old]);
    assert.equal(rows?.has(old), false);
    assert.deepEqual((await store.claims.take(ids, lease, rows)).claimed.map((j) => j.id), [old]);
  });
});

Deno.test("a job paused elsewhere and resumed here is offered and claimed once", async () => {
  await using w = await twoStores();
  const { kv, clock, a, b } = w;
  const id = await insert(a);
  await observe(kv, a);
  clock.advance(5);
  // B's pause deletes the ready key without a bump: A's copy still holds it.
  const [paused] = await b.transitions.apply([{
    id,
    event: () => ({ type: "pause", now: clock.now(), pause_reason: "user_requested" }),
  }]);
  assert.ok(paused.ok);
  clock.advance(5);
  const [resumed] = await a.transitions.apply([{
    id,
    event: () => ({ type: "resume", now: clock.now() }),
  }]);
  assert.ok(resumed.ok);
  await observe(kv, a);
  const { ids } = await a.claims.ready(10);
  assert.deepEqual(ids, [id], "one key per job");
  const taken = await a.claims.take([id, id], lease);
  assert.deepEqual(taken.claimed.map((j) => j.id), [id], "a repeated id is claimed once");
  const stats = await a.stats.read();
  assert.deepEqual([stats.queued, stats.running, stats.total], [0, 1, 1]);
});

Deno.test("a job queued again to run later is not claimed by its earlier, due key", async () => {
  await using w = await twoStores();
  const { kv, clock, a, b } = w;
  const id = await insert(a);
  await observe(kv, a);
  // B claims it (no bump), its lease runs out, and A's sweep queues it again for 30 s later.
  assert.deepEqual(
    (await b.claims.take([id], { owner: "b", lease_ms: 1_000 })).claimed.map((j) => j.id),
    [id],
  );
  clock.advance(2_000);
  const [expired] = await a.transitions.apply([{
    id,
    event: () => ({ type: "expire", now: clock.now(), backoff_ms: 30_000, reason: "lease" }),
  }]);
  assert.ok(expired.ok && expired.job.status === "queued");
  await observe(kv, a);
  assert.deepEqual((await a.claims.ready(10)).ids, [], "not due for 30 s");
  const early = await a.claims.take([id], lease);
  assert.deepEqual(early.claimed, [], "a claim never takes a job before its run_at");
  clock.advance(30_000);
  assert.deepEqual((await a.claims.ready(10)).ids, [id]);
  assert.equal((await a.claims.take([id], lease)).claimed.length, 1);
});
