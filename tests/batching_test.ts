/**
 * Issue 5's shape of work, counted in commits: one dispatcher claims many ready jobs per commit
 * and completions are group-committed, so 200 no-op jobs take a handful of commits, not 400; a
 * job enqueued through the API starts without the clock moving (woken, not polled).
 */
import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import { setup } from "./_setup.ts";

const runs = new Map<string, number>();
const noop = defineHandler({
  name: "test.noop",
  description: "Counts its runs",
  payload: z.object({}),
  run: (ctx) => {
    runs.set(ctx.job.id, (runs.get(ctx.job.id) ?? 0) + 1);
    return null;
  },
});

/** A KV handle counting the atomic commits made through it. */
function counting(kv: Deno.Kv) {
  const seen = { commits: 0 };
  const handle = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = () => (seen.commits++, commit());
          return op;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { handle, seen };
}

Deno.test("200 queued jobs at 50 workers are claimed and completed in at most 20 commits", async () => {
  await using t = await setup([noop], { start: false });
  const jobs = Array.from({ length: 200 }, () => ({ handler_name: "test.noop", payload: {} }));
  const res = await t.call("POST", "/api/pulse/jobs/batch", { jobs });
  assert.equal(res.status, 200);
  const ids: string[] = res.body.jobs.map((r: { job: { id: string } }) => r.job.id);
  const { handle, seen } = counting(t.kv);
  const worker = t.another({ kv: handle, workers: 50 });
  worker.start();
  for (const id of ids) await t.waitFor(id, (j) => j.status === "completed");
  for (const id of ids) assert.equal(runs.get(id), 1, `${id} ran once`);
  // One claim and one completion commit per job would be 400.
  assert.ok(seen.commits <= 20, `${seen.commits} commits for 200 jobs`);
  const stats = (await t.call("GET", "/api/pulse/stats")).body;
  assert.equal(stats.completed, 200);
  assert.equal(stats.total, 200);
});

Deno.test("a job enqueued through the API starts with the clock standing still", async () => {
  await using t = await setup([noop]);
  // The pool has nothing to do and waits; no poll interval can pass on the manual clock.
  for (let i = 0; i < 3; i++) {
    const id = (await t.call("POST", "/api/pulse/jobs", { handler_name: "test.noop", payload: {} }))
      .body.id;
    const start = t.clock.now();
    await t.waitFor(id, (j) => j.status === "completed"); // stepMs 0: the clock never moves
    assert.equal(t.clock.now(), start);
  }
});
