import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import { encodeJob } from "../src/store/_codec.ts";
import { setup } from "./_setup.ts";

/** A handler that misbehaves in every way a payload can make it: it never blocks the others. */
const poison = defineHandler({
  name: "test.poison",
  description: "Misbehaves on request",
  payload: z.object({
    mode: z.enum(["ok", "throw_sync", "throw_string", "reject_null", "bad_result", "hang"]),
  }),
  run(ctx) {
    switch (ctx.payload.mode) {
      case "throw_sync":
        throw new Error("sync boom");
      case "throw_string":
        throw "not an error object";
      case "reject_null":
        return Promise.reject(null);
      case "bad_result":
        return { fn: () => 1 } as unknown; // not serialisable into KV
      case "hang":
        return new Promise(() => {}); // never settles, ignores its signal
      default:
        return { ok: true };
    }
  },
});

Deno.test("jobs that poison their handler never block the others", async () => {
  await using t = await setup([poison], { workers: 2 });
  const post = async (mode: string) =>
    (await t.call("POST", "/api/pulse/jobs", { handler_name: "test.poison", payload: { mode } }))
      .body.id as string;
  const bad = [
    await post("throw_sync"),
    await post("throw_string"),
    await post("reject_null"),
    await post("bad_result"),
  ];
  const hang = await post("hang");
  const good = [];
  for (let i = 0; i < 10; i++) good.push(await post("ok"));
  for (const id of good) await t.waitFor(id, (j) => j.status === "completed", { stepMs: 500 });
  for (const id of bad) {
    const j = await t.waitFor(id, (x) => x.status === "failed", { stepMs: 500 });
    assert.ok(j.error_context, `job ${id} records why it failed`);
    assert.equal(typeof j.error_context.message, "string");
  }
  const unstorable = await t.pulse.store.jobs.get(bad[3]);
  assert.equal(unstorable?.attempt, 1, "a result KV cannot store fails at once, not by lease");
  assert.equal(unstorable?.error_context?.stage, "result");
  const hung = await t.call("POST", `/api/pulse/jobs/${hang}/cancel`);
  assert.equal(hung.status, 200);
  assert.equal(hung.body.status, "cancelled", "a hung job can still be cancelled");
  const after = await post("ok");
  await t.waitFor(after, (j) => j.status === "completed", { stepMs: 500 });
});

Deno.test("a result or checkpoint nested too deep to read back fails the job, not the API", async () => {
  let deep: unknown = 1;
  for (let i = 0; i < 3000; i++) deep = [deep];
  const nester = defineHandler({
    name: "test.nester",
    description: "Returns or checkpoints a deeply nested value",
    payload: z.object({ where: z.enum(["result", "checkpoint"]) }),
    async run(ctx) {
      if (ctx.payload.where === "checkpoint") await ctx.checkpoint(deep);
      return deep;
    },
  });
  await using t = await setup([nester]);
  for (const where of ["result", "checkpoint"]) {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "test.nester",
      payload: { where },
    });
    const j = await t.waitFor(r.body.id, (x) => x.status === "failed");
    assert.equal(j.attempt, 1, where);
    assert.match(j.error_context!.message, /nested deeper/);
  }
  const list = await t.call("GET", "/api/pulse/jobs?limit=10");
  assert.equal(list.status, 200, "every stored job can still be read");
});

/** A payload that fit when first written but not once KV has read it back (an earlier version
 * accepted it): 14,000 ones are 28 KB as parsed from JSON and ~70 KB read back. */
const growing = () => JSON.parse(`[${Array(14_000).fill(1).join(",")}]`);
const item = (payload: unknown) => ({
  handler_name: "test.any",
  payload,
  source: "",
  queue: "default",
  cost_estimate: 0,
  total: 0,
  priority: 0,
});
const any = defineHandler({
  name: "test.any",
  description: "Takes any payload; checkpoints 15,000 ones when asked",
  payload: z.unknown(),
  run: async (ctx) => {
    if (ctx.payload === "checkpoint") await ctx.checkpoint(growing());
    return null;
  },
});

Deno.test("a record KV will not take back holds back no other job", async (s) => {
  await s.step("claims go on past it", async () => {
    await using t = await setup([any], { start: false, workers: 4 });
    const [bad, ...good] = await t.pulse.store.jobs.insert([
      item(growing()),
      ...Array.from({ length: 6 }, () => item({})),
    ]);
    assert.ok(bad.ok);
    t.pulse.start();
    for (const r of good) {
      assert.ok(r.ok);
      await t.waitFor(r.job.id, (j) => j.status === "completed");
    }
    assert.equal((await t.pulse.store.jobs.get(bad.job.id))?.status, "queued");
    // The API cannot change it (413, not 500), and can delete it.
    const paused = await t.call("POST", `/api/pulse/jobs/${bad.job.id}/pause`);
    assert.equal(paused.status, 413, JSON.stringify(paused.body));
    assert.equal((await t.call("DELETE", `/api/pulse/jobs/${bad.job.id}`)).status, 200);
    assert.equal(await t.pulse.store.jobs.get(bad.job.id), null);
    assert.equal((await t.pulse.store.stats.read()).total, 6);
  });
  await s.step("the lease sweep goes on past it", async () => {
    await using t = await setup([any], { start: false, workers: 4 });
    const store = t.pulse.store;
    const rs = await store.jobs.insert([item({}), item({})]);
    const ids = rs.map((r) => (r.ok ? r.job.id : ""));
    const { claimed } = await store.claims.take(ids, { owner: "gone", lease_ms: 1_000 });
    assert.equal(claimed.length, 2);
    // As an earlier version could leave it: running, with a payload that grows when read back.
    const [big] = await store.jobs.getMany([ids[0]]);
    await t.kv.set(store.keys.job(ids[0]), encodeJob({ ...big!, payload: growing() }));
    t.clock.advance(2_000);
    assert.equal(await t.pulse.pool.sweepOnce(), 1);
    assert.equal((await store.jobs.get(ids[1]))?.status, "queued");
    assert.equal((await store.jobs.get(ids[0]))?.status, "running");
  });
});

Deno.test("a checkpoint that would not fit once read back is refused, and the job fails", async () => {
  await using t = await setup([any], { start: false });
  const [r] = await t.pulse.store.jobs.insert([item("checkpoint")]);
  assert.ok(r.ok);
  t.pulse.start();
  const job = await t.waitFor(r.job.id, (j) => j.status === "failed");
  assert.equal(job.error_context?.code, "validation_error");
  assert.match(job.error_context!.message, /Checkpoint and payload are \d+ bytes stored/);
  assert.equal(job.checkpoint, undefined);
});
