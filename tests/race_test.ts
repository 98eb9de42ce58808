/**
 * Real races: two Pulse instances built separately (`t.another()`), sharing only the Deno.Kv,
 * enqueue and claim concurrently. Deduplication and claims must hold exactly once.
 */
import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import type { Pulse } from "../src/pulse.ts";
import type { Store } from "../src/store/mod.ts";
import { setup, type World } from "./_setup.ts";

const JOBS = "/api/pulse/jobs";
/** Starts per job id, and the lease owner each start ran under. */
const runs = new Map<string, number>();
const owners = new Map<string, string>();
let stores: Store[] = [];

const counted = defineHandler({
  name: "test.counted",
  description: "Counts its starts per job id",
  payload: z.object({ i: z.number().int() }),
  run: async (ctx) => {
    runs.set(ctx.job.id, (runs.get(ctx.job.id) ?? 0) + 1);
    const job = await stores[0].jobs.get(ctx.job.id); // also yields, so both pools get turns
    owners.set(ctx.job.id, job?.lease?.owner ?? "?");
    return ctx.payload.i;
  },
});

/** Polls until every job is done (a bounded loop, not a sleep); stats add up on every read. */
async function untilCompleted(t: World, n: number) {
  for (let i = 0; i < 10_000; i++) {
    const stats = (await t.call("GET", "/api/pulse/stats")).body;
    assert.equal(stats.total, n, `a torn read of the counters: ${JSON.stringify(stats)}`);
    if (stats.completed === n) return stats;
    await new Promise((r) => setTimeout(r, 1)); // yield to the engines; not a timing assumption
  }
  throw new Error(`Not all ${n} jobs completed`);
}

Deno.test("20 concurrent POSTs with one (handler_name, source) on two instances create one job", async () => {
  await using t = await setup([counted], { start: false });
  const b = t.another();
  const body = { handler_name: "test.counted", payload: { i: 1 }, source: "same.csv" };
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, i) => t.call("POST", JOBS, body, i % 2 ? b : t.pulse)),
  );
  for (const a of answers) assert.ok([200, 201].includes(a.status), JSON.stringify(a.body));
  assert.equal(answers.filter((a) => a.status === 201).length, 1);
  const ids = new Set(answers.map((a) => a.body.id));
  assert.equal(ids.size, 1);
  const list = (await t.call("GET", `${JOBS}?limit=1000`)).body.jobs;
  assert.deepEqual(list.map((j: { id: string }) => j.id), [...ids]);
  const stats = (await t.call("GET", "/api/pulse/stats", undefined, b)).body;
  assert.equal(stats.queued, 1);
  assert.equal(stats.total, 1);
});

Deno.test("200 jobs claimed by two pools of 8 workers each run exactly once", async () => {
  await using t = await setup([counted], { start: false, workers: 8 });
  const b = t.another();
  stores = [t.pulse.store];
  const apps: Pulse[] = [t.pulse, b];
  const ids: string[] = [];
  for (let i = 0; i < 200; i += 20) {
    const batch = await Promise.all(
      Array.from(
        { length: 20 },
        (_, k) =>
          t.call(
            "POST",
            JOBS,
            { handler_name: "test.counted", payload: { i: i + k } },
            apps[k % 2],
          ),
      ),
    );
    for (const r of batch) assert.equal(r.status, 201);
    ids.push(...batch.map((r) => r.body.id));
  }
  t.pulse.start();
  b.start();
  const stats = await untilCompleted(t, 200);
  assert.deepEqual(stats, {
    queued: 0,
    running: 0,
    paused: 0,
    completed: 200,
    failed: 0,
    cancelled: 0,
    total: 200,
  });
  assert.equal(new Set(ids).size, 200);
  for (const id of ids) {
    assert.equal(runs.get(id), 1, `job ${id} ran ${runs.get(id)} times`);
    const events = (await t.pulse.store.jobs.events(id)).map((e) => e.event);
    assert.deepEqual(events, ["enqueue", "claim", "complete"], id);
  }
  const byOwner = new Map<string, number>();
  for (const id of ids) byOwner.set(owners.get(id)!, (byOwner.get(owners.get(id)!) ?? 0) + 1);
  console.log("jobs run per pool:", Object.fromEntries(byOwner));
  assert.equal([...byOwner.values()].reduce((a, n) => a + n, 0), 200);
});

Deno.test("two store.claims.next callers racing on 100 ready jobs never claim one twice", async () => {
  await using t = await setup([counted], { start: false });
  const claimers = [
    { store: t.pulse.store, owner: "A" },
    { store: t.another().store, owner: "B" },
  ];
  const inserted = await t.pulse.store.jobs.insert(
    Array.from({ length: 100 }, (_, i) => ({
      handler_name: "test.counted",
      payload: { i },
      source: "",
      queue: "default",
      cost_estimate: 0,
      total: 0,
      priority: 0,
    })),
  );
  const ids = inserted.map((r) => (assert.ok(r.ok), r.job.id));
  const claimedBy = new Map<string, string[]>();
  for (let round = 0; round < 200; round++) {
    const callers = [...claimers, ...claimers, ...claimers, ...claimers];
    const got = await Promise.all(
      callers.map(async ({ store, owner }) => ({
        owner,
        jobs: await store.claims.next({ owner, max: 7, lease_ms: 60_000 }),
      })),
    );
    for (const { owner, jobs } of got) {
      for (const j of jobs) claimedBy.set(j.id, [...(claimedBy.get(j.id) ?? []), owner]);
    }
    if ((await t.pulse.store.claims.nextRunAt()) === null) break;
  }
  const twice = [...claimedBy].filter(([, who]) => who.length > 1);
  assert.deepEqual(twice, [], "no job claimed twice");
  assert.deepEqual([...claimedBy.keys()].sort(), [...ids].sort());
  const jobs = await t.pulse.store.jobs.getMany(ids);
  for (const j of jobs) {
    assert.equal(j?.status, "running");
    assert.equal(j.lease?.owner, claimedBy.get(j.id)![0]);
    assert.equal(j.attempt, 1);
    const events = (await t.pulse.store.jobs.events(j.id)).map((e) => e.event);
    assert.deepEqual(events, ["enqueue", "claim"]);
  }
  const per = (o: string) => [...claimedBy.values()].filter((w) => w[0] === o).length;
  console.log(`claimed: A ${per("A")}, B ${per("B")}`);
  const stats = await t.pulse.store.stats.read();
  assert.equal(stats.running, 100);
  assert.equal(stats.queued, 0);
});
