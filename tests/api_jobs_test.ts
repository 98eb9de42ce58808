/**
 * The job routes through the real Hono app with the pool running: deduplication, pagination,
 * filters, history, the lifecycle verbs for every status, delete, stats and the system routes.
 */
import assert from "node:assert/strict";
import { iso } from "../src/clock.ts";
import { defineHandler, PermanentError, z } from "../src/mod.ts";
import { JOB_STATUSES, type JobStatus } from "../src/types.ts";
import { setup, type World } from "./_setup.ts";

const JOBS = "/api/pulse/jobs";
const Empty = z.object({});
/** Release functions of jobs that `test.block` holds running, by job id. */
const held = new Map<string, () => void>();

/** A test handler; its description is its name. */
const handler = (
  name: string,
  run: (ctx: { job: { id: string }; signal: AbortSignal }) => unknown,
  payload: z.ZodType = Empty,
) => defineHandler({ name, description: name, payload, run });
const HANDLERS = [
  handler("test.echo", () => ({ echoed: true }), z.object({ text: z.string().optional() })),
  handler("test.other", () => 1),
  handler("test.boom", () => {
    throw new PermanentError("boom", "validation_error");
  }),
  // Runs until the test releases it or its signal aborts.
  handler("test.block", (ctx) =>
    new Promise((resolve, reject) => {
      held.set(ctx.job.id, () => resolve("released"));
      ctx.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
    })),
];

async function post(t: World, body: Record<string, unknown>, status = 201): Promise<string> {
  const res = await t.call("POST", JOBS, { payload: {}, ...body });
  assert.equal(res.status, status, JSON.stringify(res.body));
  return res.body.id;
}

/** A new job in `status`; queued jobs are scheduled an hour ahead so that they stay queued. */
async function jobIn(t: World, status: JobStatus): Promise<string> {
  const later = iso(t.clock.now() + 3_600_000);
  const queued = () => post(t, { handler_name: "test.echo", run_at: later });
  const act = async (id: string, verb: string) => {
    assert.equal((await t.call("POST", `${JOBS}/${id}/${verb}`)).status, 200);
    return id;
  };
  const until = async (handler_name: string, s: JobStatus) => {
    const id = await post(t, { handler_name });
    await t.waitFor(id, (j) => j.status === s && (s !== "running" || held.has(j.id)));
    return id;
  };
  const make: Record<JobStatus, () => Promise<string>> = {
    queued,
    paused: async () => act(await queued(), "pause"),
    cancelled: async () => act(await queued(), "cancel"),
    running: () => until("test.block", "running"),
    completed: () => until("test.echo", "completed"),
    failed: () => until("test.boom", "failed"),
  };
  return await make[status]();
}

/** Every job, walking the list with `limit`; checks the page shapes on the way. */
async function walk(t: World, query: string, limit: number) {
  const ids: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const after: string = cursor ? `&cursor=${cursor}` : "";
    const res = await t.call("GET", `${JOBS}?limit=${limit}${after}${query}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(res.body.jobs.length <= limit);
    ids.push(...res.body.jobs.map((j: { id: string }) => j.id));
    cursor = res.body.next_cursor;
    if (cursor) assert.equal(res.body.jobs.length, limit, "only the last page is short");
    pages++;
  } while (cursor && pages < 1000);
  return { ids, pages };
}

Deno.test("POST /api/pulse/jobs deduplicates by (handler_name, source) only while active", async () => {
  await using t = await setup(HANDLERS, { start: false });
  const first = await post(t, { handler_name: "test.echo", source: "a.csv" });
  assert.equal(await post(t, { handler_name: "test.echo", source: "a.csv" }, 200), first);
  const otherHandler = await post(t, { handler_name: "test.other", source: "a.csv" });
  assert.notEqual(otherHandler, first);
  const [x, y] = [
    await post(t, { handler_name: "test.echo" }),
    await post(t, { handler_name: "test.echo" }),
  ];
  assert.notEqual(x, y, "a job without source is never deduplicated");
  assert.equal((await t.call("GET", `${JOBS}/${x}`)).body.source, "");
  t.pulse.start();
  await t.waitFor(first, (j) => j.status === "completed");
  const again = await post(t, { handler_name: "test.echo", source: "a.csv" });
  assert.notEqual(again, first, "a new job once the first completed");
});

Deno.test("GET /api/pulse/jobs walks every job exactly once, oldest first", async () => {
  await using t = await setup(HANDLERS, { start: false });
  assert.deepEqual((await t.call("GET", JOBS)).body, { jobs: [], next_cursor: null });
  const created: string[] = [];
  for (let i = 0; i < 100; i++) created.push(await post(t, { handler_name: "test.echo" }));
  assert.deepEqual(await walk(t, "", 50), { ids: created, pages: 2 });
  for (let i = 0; i < 50; i++) {
    const handler_name = i % 3 ? "test.echo" : "test.other";
    created.push(await post(t, { handler_name }));
  }
  assert.deepEqual([...created].sort(), created, "ids are in creation order");
  assert.deepEqual(await walk(t, "", 50), { ids: created, pages: 3 });
  assert.deepEqual(await walk(t, "", 40), { ids: created, pages: 4 });
  assert.deepEqual((await walk(t, "", 1000)).ids, created);
  assert.equal((await walk(t, "&handler_name=test.other", 7)).ids.length, 17);
  assert.deepEqual((await walk(t, "&status=queued", 33)).ids, created);
});

Deno.test("GET /api/pulse/jobs filters; children and events of a job", async () => {
  await using t = await setup(HANDLERS, { start: false });
  const [e1, e2] = [await post(t, { handler_name: "test.echo" }), await jobIn(t, "cancelled")];
  const q1 = [await post(t, { handler_name: "test.other", queue: "q1" })];
  q1.push(await post(t, { handler_name: "test.other", queue: "q1" }));
  const parent = await post(t, { handler_name: "test.echo" });
  const kids = [await post(t, { handler_name: "test.other", parent_job_id: parent })];
  kids.push(await post(t, { handler_name: "test.echo", parent_job_id: parent }));
  const ids = async (q: string) => (await walk(t, q, 50)).ids;
  assert.deepEqual(await ids("&status=cancelled"), [e2]);
  assert.deepEqual(await ids("&status=queued"), [e1, ...q1, parent, ...kids]);
  assert.deepEqual(await ids("&handler_name=test.other"), [...q1, kids[0]]);
  assert.deepEqual(await ids("&queue=q1"), q1);
  const echoes = await ids("&queue=default&handler_name=test.echo&status=queued");
  assert.deepEqual(echoes, [e1, parent, kids[1]]);
  assert.deepEqual(await ids(`&parent_job_id=${parent}`), kids);
  assert.deepEqual(await ids(`&parent_job_id=${parent}&handler_name=test.echo`), [kids[1]]);
  const children = await t.call("GET", `${JOBS}/${parent}/children`);
  assert.deepEqual(children.body.jobs.map((j: { id: string }) => j.id), kids);
  assert.equal(children.body.next_cursor, null);
  const events = await t.call("GET", `${JOBS}/${e2}/events`);
  assert.equal(events.status, 200);
  type E = { seq: number; event: string; from: string | null; to: string; reason?: string };
  assert.deepEqual(events.body.events.map((e: E) => [e.seq, e.event, e.from, e.to, e.reason]), [
    [1, "enqueue", null, "queued", undefined],
    [2, "cancel", "queued", "cancelled", "Requested through the API"],
  ]);
  assert.equal(events.body.events[1].at, iso(t.clock.now()));
});

/** DESIGN's table for the four API verbs: the status each allowed pair leads to. */
const ALLOWED: Record<JobStatus, Partial<Record<string, JobStatus>>> = {
  queued: { pause: "paused", cancel: "cancelled" },
  running: { pause: "paused", cancel: "cancelled" },
  paused: { resume: "queued", cancel: "cancelled" },
  failed: { retry: "queued" },
  completed: {},
  cancelled: {},
};

Deno.test("POST /api/pulse/jobs/:id/{verb} answers 200 or 409 as the lifecycle table says", async (s) => {
  await using t = await setup(HANDLERS);
  for (const status of JOB_STATUSES) {
    for (const verb of ["pause", "resume", "cancel", "retry"]) {
      const to = ALLOWED[status][verb];
      await s.step(`${status} × ${verb} → ${to ?? "409"}`, async () => {
        const id = await jobIn(t, status);
        const before = (await t.call("GET", `${JOBS}/${id}`)).body;
        const res = await t.call("POST", `${JOBS}/${id}/${verb}`);
        if (to) {
          assert.equal(res.status, 200, JSON.stringify(res.body));
          assert.equal(res.body.status, to);
        } else {
          assert.equal(res.status, 409, JSON.stringify(res.body));
          assert.equal(res.body.error.code, "invalid_transition");
          const after = (await t.call("GET", `${JOBS}/${id}`)).body;
          assert.deepEqual(after, before, "a refused verb changes nothing");
        }
        held.get(id)?.();
      });
    }
  }
});

Deno.test("DELETE /api/pulse/jobs/:id cancels the active children and removes the parent", async () => {
  await using t = await setup(HANDLERS);
  const parent = await jobIn(t, "queued");
  const child = (handler_name: string, extra = {}) =>
    post(t, { handler_name, parent_job_id: parent, ...extra });
  const later = { run_at: iso(t.clock.now() + 60_000) };
  const [queued, paused] = [await child("test.echo", later), await child("test.echo", later)];
  await t.call("POST", `${JOBS}/${paused}/pause`);
  const running = await child("test.block");
  const done = await child("test.echo");
  await t.waitFor(running, (j) => j.status === "running");
  await t.waitFor(done, (j) => j.status === "completed");
  const res = await t.call("DELETE", `${JOBS}/${parent}`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { deleted: true, cancelled_children: 3 });
  assert.equal((await t.call("GET", `${JOBS}/${parent}`)).status, 404);
  assert.equal((await t.call("GET", `${JOBS}/${parent}/events`)).status, 404);
  for (const id of [queued, paused, running]) {
    assert.equal((await t.call("GET", `${JOBS}/${id}`)).body.status, "cancelled");
  }
  assert.equal((await t.call("GET", `${JOBS}/${done}`)).body.status, "completed");
  assert.equal((await t.call("DELETE", `${JOBS}/${parent}`)).status, 404);
});

Deno.test("GET /api/pulse/stats equals the counts of listed jobs per status", async () => {
  await using t = await setup(HANDLERS);
  for (const status of [...JOB_STATUSES, "queued", "completed", "failed"] as const) {
    await jobIn(t, status);
  }
  const stats = (await t.call("GET", "/api/pulse/stats")).body;
  const jobs = (await t.call("GET", `${JOBS}?limit=1000`)).body.jobs as { status: JobStatus }[];
  const counted = Object.fromEntries(
    JOB_STATUSES.map((s) => [s, jobs.filter((j) => j.status === s).length]),
  );
  assert.deepEqual(stats, { ...counted, total: jobs.length });
  assert.equal(stats.total, 9);
});

Deno.test("system routes: metrics, handlers, healthz, openapi.json", async (s) => {
  await using t = await setup(HANDLERS, { start: false });
  await s.step("GET /healthz answers 503 before the pool runs, 200 after", async () => {
    assert.equal((await t.call("GET", "/healthz")).status, 503);
    t.pulse.start();
    assert.equal((await t.call("GET", "/healthz")).status, 200);
  });
  await s.step("GET /api/pulse/metrics has the seed fields", async () => {
    const m = (await t.call("GET", "/api/pulse/metrics")).body;
    for (const k of ["workers_active", "memory_used_gb", "memory_percent", "jobs_queued"]) {
      assert.equal(typeof m[k], "number", k);
    }
    assert.equal(m.jobs_running, 0);
    assert.equal(m.workers_total, 4);
    assert.ok(m.memory_total_gb > 0);
  });
  await s.step("GET /api/pulse/handlers lists each payload_schema", async () => {
    const h = (await t.call("GET", "/api/pulse/handlers")).body.handlers;
    assert.deepEqual(h.map((x: { name: string }) => x.name), HANDLERS.map((x) => x.name).sort());
    const e = h.find((x: { name: string }) => x.name === "test.echo");
    assert.equal(e.description, "test.echo");
    assert.equal(e.payload_schema.type, "object");
    assert.equal(e.payload_schema.properties.text.type, "string");
  });
  await s.step("GET /api/pulse/openapi.json has the paths", async () => {
    const doc = await t.call("GET", "/api/pulse/openapi.json");
    assert.equal(doc.status, 200);
    const paths = Object.keys(doc.body.paths);
    for (const p of ["", "/{id}", "/{id}/children", "/{id}/events", "/{id}/retry"]) {
      assert.ok(paths.includes(`${JOBS}${p}`), p);
    }
    for (const p of ["stats", "metrics", "handlers"]) assert.ok(paths.includes(`/api/pulse/${p}`));
  });
});
