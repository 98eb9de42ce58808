import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import { setup } from "./_setup.ts";
import { afterCommit } from "./_util.ts";

const noop = defineHandler({
  name: "test.noop",
  description: "Does nothing",
  payload: z.object({ n: z.number().int() }),
  run: () => null,
});

const job = (n: number, extra: Record<string, unknown> = {}) => ({
  handler_name: "test.noop",
  payload: { n },
  ...extra,
});

Deno.test("POST /api/pulse/jobs/batch enqueues every job in order, deduplicating per item", async () => {
  await using t = await setup([noop], { start: false });
  const body = { jobs: [job(0), job(1, { source: "s" }), job(2, { source: "s" }), job(3)] };
  const res = await t.call("POST", "/api/pulse/jobs/batch", body);
  assert.equal(res.status, 200);
  const out = res.body.jobs as { job: { id: string; payload: { n: number } }; created: boolean }[];
  assert.deepEqual(out.map((r) => r.created), [true, true, false, true]);
  assert.equal(out[2].job.id, out[1].job.id, "same (handler_name, source) → the same job");
  assert.deepEqual(out.map((r) => r.job.payload.n), [0, 1, 1, 3]);
  assert.equal((await t.pulse.store.stats.read()).queued, 3);
});

Deno.test("POST /api/pulse/jobs/batch of 2,500 jobs spans many commits and loses none", async () => {
  await using t = await setup([noop], { start: false });
  const jobs = Array.from({ length: 2500 }, (_, i) => job(i));
  const res = await t.call("POST", "/api/pulse/jobs/batch", { jobs });
  assert.equal(res.status, 200);
  assert.equal(res.body.jobs.length, 2500);
  assert.equal(new Set(res.body.jobs.map((r: { job: { id: string } }) => r.job.id)).size, 2500);
  assert.equal((await t.pulse.store.stats.read()).queued, 2500);
});

Deno.test("POST /api/pulse/jobs/batch validates all-or-nothing", async (t) => {
  await using w = await setup([noop], { start: false });
  const cases: [string, unknown, number, string][] = [
    [
      "a bad payload",
      { jobs: [job(0), { handler_name: "test.noop", payload: { n: "x" } }] },
      400,
      "validation_error",
    ],
    ["an unknown handler", { jobs: [job(0), { handler_name: "nope" }] }, 422, "unknown_handler"],
    [
      "a missing parent",
      { jobs: [job(0, { parent_job_id: "01JZZZZZZZZZZZZZZZZZZZZZZZ" })] },
      422,
      "unknown_parent",
    ],
    ["an empty list", { jobs: [] }, 400, "validation_error"],
    [
      "over 10,000 jobs",
      { jobs: Array.from({ length: 10_001 }, (_, i) => job(i)) },
      413,
      "payload_too_large",
    ],
    [
      "over 10,000 jobs, one of them invalid (counted before the items are checked)",
      { jobs: [...Array.from({ length: 10_000 }, (_, i) => job(i)), { handler_name: 1 }] },
      413,
      "payload_too_large",
    ],
  ];
  for (const [name, body, status, code] of cases) {
    await t.step(name, async () => {
      const res = await w.call("POST", "/api/pulse/jobs/batch", body);
      assert.equal(res.status, status);
      assert.equal(res.body.error.code, code);
      assert.equal((await w.pulse.store.stats.read()).total, 0, "nothing was enqueued");
    });
  }
  await t.step("issue paths name the item", async () => {
    const res = await w.call("POST", "/api/pulse/jobs/batch", {
      jobs: [job(0), { handler_name: "test.noop", payload: { n: "x" } }],
    });
    assert.equal(res.body.error.issues[0].path, "jobs.1.payload.n");
  });
  await t.step("a body over 16 MiB is 413", async () => {
    const res = await w.call(
      "POST",
      "/api/pulse/jobs/batch",
      `{"jobs":["${"x".repeat(17 * 1024 * 1024)}"]}`,
    );
    assert.equal(res.status, 413);
  });
});

Deno.test("POST /api/pulse/jobs/batch of large payloads splits commits by size, not only count", async () => {
  await using t = await setup([
    noop,
    defineHandler({
      name: "test.big",
      description: "Takes a big payload",
      payload: z.object({ blob: z.string() }),
      run: () => null,
    }),
  ], { start: false });
  const jobs = [
    ...Array.from({ length: 40 }, (_, i) => job(i)),
    ...Array.from(
      { length: 20 },
      () => ({ handler_name: "test.big", payload: { blob: "y".repeat(40_000) } }),
    ),
  ];
  const res = await t.call("POST", "/api/pulse/jobs/batch", { jobs });
  assert.equal(res.status, 200);
  assert.equal((await t.pulse.store.stats.read()).queued, 60);
});

Deno.test("a parent deleted while a batch is stored: 409 naming each job not stored", async () => {
  await using t = await setup([noop], { start: false });
  const parent = (await t.call("POST", "/api/pulse/jobs", job(-1))).body.id;
  // A second instance whose first commit of the batch is followed by the parent's DELETE.
  let deleted = 0;
  const racing = t.another({
    kv: afterCommit(t.kv, 1, async () => {
      deleted = (await t.call("DELETE", `/api/pulse/jobs/${parent}`)).status;
    }),
  });
  const jobs = Array.from({ length: 100 }, (_, i) => job(i, { parent_job_id: parent }));
  const res = await t.call("POST", "/api/pulse/jobs/batch", { jobs }, racing);
  assert.equal(deleted, 200);
  assert.equal(res.status, 409, JSON.stringify(res.body));
  assert.equal(res.body.error.code, "conflict");
  const notStored = new Set(
    res.body.error.issues.map((i: { path: string }) => Number(i.path.split(".")[1])),
  );
  assert.ok(notStored.size > 0 && notStored.size < 100, `${notStored.size} not stored`);
  // Exactly the jobs not named are stored, once each.
  const stored = (await t.call("GET", `/api/pulse/jobs?limit=1000`)).body.jobs
    .map((j: { payload: { n: number } }) => j.payload.n).sort((a: number, b: number) => a - b);
  const expected = jobs.map((_, i) => i).filter((i) => !notStored.has(i));
  assert.deepEqual(stored, expected);
  assert.match(res.body.error.message, new RegExp(`^${expected.length} of 100 jobs were stored`));
});
