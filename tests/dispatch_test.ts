/**
 * The claim-ahead buffer against the loops that prune it: a job the dispatcher hands to a worker
 * while `checkTaken` (or the heartbeat) awaits KV must not make it drop another claimed job. The
 * manual clock never moves here, so a dropped job would stay `running` until its lease ran out.
 */
import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import type { Pulse } from "../src/pulse.ts";
import { setup } from "./_setup.ts";

/** Release functions of the gated runs, by job id; every job id that started. */
const gates = new Map<string, () => void>();
const started = new Set<string>();

const work = defineHandler({
  name: "test.work",
  description: "Waits for the test to release it when gated, else ends at once",
  payload: z.object({ gated: z.boolean() }),
  run: async (ctx) => {
    started.add(ctx.job.id);
    if (ctx.payload.gated) await new Promise<void>((r) => gates.set(ctx.job.id, r));
    return null;
  },
});

/** A KV handle whose next `getMany` waits until the test releases it. */
function holdNextGetMany(kv: Deno.Kv) {
  let armed: { entered: () => void; release: Promise<void> } | null = null;
  const hooked = new Proxy(kv, {
    get(target, prop) {
      if (prop === "getMany") {
        return async (keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
          const hold = armed;
          armed = null;
          if (hold) {
            hold.entered();
            await hold.release;
          }
          return target.getMany(keys, options);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const arm = () => {
    const entered = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    armed = { entered: entered.resolve, release: release.promise };
    return { entered: entered.promise, release: release.resolve };
  };
  return { hooked, arm };
}

/** Inserts one `test.work` job per flag (gated or not); returns their ids in order. */
async function insertWork(p: Pulse, gated: boolean[]) {
  const rs = await p.store.jobs.insert(gated.map((g) => ({
    handler_name: "test.work",
    payload: { gated: g },
    source: "",
    queue: "default",
    cost_estimate: 0,
    total: 0,
    priority: 0,
  })));
  return rs.map((r) => (r.ok ? r.job.id : ""));
}

async function until(what: string, done: () => boolean | Promise<boolean>) {
  const deadline = performance.now() + 10_000;
  while (!(await done())) {
    assert.ok(performance.now() < deadline, `timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 1)); // yield to the engine; not a timing assumption
  }
}

Deno.test("a job started while checkTaken reads KV does not make it drop another claimed job", async () => {
  await using t = await setup([work], { start: false });
  const { hooked, arm } = holdNextGetMany(t.kv);
  const p = t.another({ kv: hooked, workers: 2, lease_ms: 30_000 });
  const ids = await insertWork(p, [true, true, false, false, false, false]);
  p.start();
  // Two gated jobs run; the four others are claimed ahead of the workers.
  await until("two run and four wait", () => {
    const s = p.pool.status();
    return s.workers_active === 2 && s.jobs_claimed_ahead === 4 && gates.size === 2;
  });

  const held = arm();
  const checking = p.pool.checkTaken(); // snapshots the buffer, then reads the jobs
  await held.entered;
  gates.get(ids[0])!(); // a worker frees up and takes the first claimed-ahead job, which ends
  await until("the first claimed-ahead job completed", async () => {
    return (await p.store.jobs.get(ids[2]))?.status === "completed";
  });
  held.release(); // checkTaken now finds that job no longer running under this pool
  await checking;

  gates.get(ids[1])!();
  await until("every job completed", async () => {
    const jobs = await p.store.jobs.getMany(ids);
    return jobs.every((j) => j?.status === "completed");
  });
  for (const id of ids) {
    const events = (await p.store.jobs.events(id)).map((e) => e.event);
    assert.deepEqual(events, ["enqueue", "claim", "complete"], id);
  }
});

Deno.test("a paused queue with a job due is looked at again on new work, not in a loop", async () => {
  await using t = await setup([work], { start: false });
  const p = t.pulse;
  const take = p.store.claims.take;
  let takes = 0;
  p.store.claims.take = (...args) => (takes++, take(...args)); // counts; the real claim runs
  await p.store.governor.setQueuePaused(true);
  const [id] = await insertWork(p, [false]);
  p.start();
  await until("a claim finds the queue paused", () => takes > 0);
  // The manual clock stands still, so no poll interval passes: give the engine many turns.
  for (let i = 0; i < 200; i++) await new Promise((r) => setTimeout(r, 0));
  assert.ok(takes <= 2, `${takes} claims while the queue stayed paused`);
  await p.store.governor.setQueuePaused(false);
  p.pool.wake(); // what POST /api/pulse/resume does
  await until(
    "the job ran",
    async () => (await p.store.jobs.get(id))?.status === "completed",
  );
});

Deno.test("a claimed-ahead job cancelled through this process's API never starts", async () => {
  await using t = await setup([work], { start: false });
  // checkTaken's read of the whole buffer (2 jobs) is held: only a synchronous unbuffer helps.
  let release = () => {};
  const held = new Promise<void>((r) => release = r);
  const kv = new Proxy(t.kv, {
    get(target, prop) {
      if (prop === "getMany") {
        return async (keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
          if (keys.length === 2 && keys.every((k) => k.at(-2) === "job")) await held;
          return target.getMany(keys, options);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const p = t.another({ kv, workers: 2, lease_ms: 30_000 });
  const ids = await insertWork(p, [true, true, false, false]);
  p.start();
  await until("two run and two wait", () => {
    const s = p.pool.status();
    return s.workers_active === 2 && s.jobs_claimed_ahead === 2 && gates.has(ids[1]) &&
      gates.has(ids[0]);
  });
  const cancel = async (id: string) => {
    const res = await t.call("POST", `/api/pulse/jobs/${id}/cancel`, undefined, p);
    assert.equal(res.status, 200, JSON.stringify(res.body));
  };
  await cancel(ids[2]); // claimed ahead
  await cancel(ids[0]); // running: its worker walks away and is free for the next job
  await until("the other claimed-ahead job ran", async () => {
    return (await p.store.jobs.get(ids[3]))?.status === "completed";
  });
  release();
  assert.ok(!started.has(ids[2]), "the cancelled claimed-ahead job started");
  assert.equal((await p.store.jobs.get(ids[2]))?.status, "cancelled");
  gates.get(ids[1])!();
  await until("the last job completed", async () => {
    return (await p.store.jobs.get(ids[1]))?.status === "completed";
  });
});
