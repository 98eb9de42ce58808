/**
 * Bad input gets a clear 4xx `{ error: { code, message, issues? } }` and changes nothing
 * (DESIGN invariant 9): every refused request leaves the stats and the job list as they were.
 */
import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import { setup, type World } from "./_setup.ts";

const echo = defineHandler({
  name: "test.echo",
  description: "Echoes",
  payload: z.object({ text: z.string(), n: z.number().int().optional() }),
  run: (ctx) => ({ echoed: ctx.payload.text }),
});

const JOBS = "/api/pulse/jobs";
/** A well-formed ULID that no job has. */
const NO_SUCH_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

/** The world after one valid job, with the pool stopped so that nothing moves by itself. */
async function world() {
  const t = await setup([echo], { start: false });
  const res = await t.call("POST", JOBS, { handler_name: "test.echo", payload: { text: "x" } });
  assert.equal(res.status, 201);
  return t;
}

async function snapshot(t: World) {
  const stats = await t.call("GET", "/api/pulse/stats");
  const list = await t.call("GET", `${JOBS}?limit=1000`);
  assert.equal(stats.status, 200);
  assert.equal(list.status, 200);
  return { stats: stats.body, jobs: list.body };
}

/** Sends a raw request to the app; the answer must be JSON. */
async function raw(t: World, path: string, init: RequestInit = {}) {
  const res = await t.pulse.app.request(path, init);
  return { status: res.status, body: JSON.parse(await res.text()) };
}

/** Asserts the error shape and status, and that the request changed nothing. */
async function expectRefused(
  t: World,
  send: () => Promise<{ status: number; body: { error?: { code: string; message: string } } }>,
  status: number | number[],
  code?: string,
) {
  const before = await snapshot(t);
  const res = await send();
  const allowed = Array.isArray(status) ? status : [status];
  assert.ok(allowed.includes(res.status), `status ${res.status}: ${JSON.stringify(res.body)}`);
  assert.equal(typeof res.body?.error?.code, "string", JSON.stringify(res.body));
  assert.ok(res.body.error!.message.length > 0);
  if (code) assert.equal(res.body.error!.code, code);
  assert.deepEqual(await snapshot(t), before);
  return res.body.error as { code: string; message: string; issues?: { path: string }[] };
}

const post = (t: World, body: unknown) => () => t.call("POST", JOBS, body);
const paths = (e: { issues?: { path: string }[] }) => (e.issues ?? []).map((i) => i.path);

Deno.test("POST /api/pulse/jobs answers 400 for a body that is not a JSON object", async (s) => {
  await using t = await world();
  const json = { "content-type": "application/json" };
  await s.step("malformed JSON", async () => {
    await expectRefused(t, post(t, "{not json"), 400, "validation_error");
  });
  await s.step("empty body", async () => {
    const send = () => raw(t, JOBS, { method: "POST", headers: json });
    await expectRefused(t, send, 400, "validation_error");
  });
  await s.step("JSON null and a JSON array", async () => {
    await expectRefused(t, post(t, "null"), 400, "validation_error");
    await expectRefused(t, post(t, "[]"), 400, "validation_error");
  });
  await s.step("non-JSON content type", async () => {
    const body = JSON.stringify({ handler_name: "test.echo", payload: { text: "x" } });
    for (const type of ["text/plain", "application/x-www-form-urlencoded", undefined]) {
      const headers: HeadersInit = type ? { "content-type": type } : {};
      const send = () => raw(t, JOBS, { method: "POST", body, headers });
      await expectRefused(t, send, [400, 415], "validation_error");
    }
  });
});

Deno.test("POST /api/pulse/jobs answers 400 with issues for fields of the wrong shape", async (s) => {
  await using t = await world();
  const ok = { handler_name: "test.echo", payload: { text: "x" } };
  await s.step("unknown top-level field", async () => {
    const e = await expectRefused(t, post(t, { ...ok, colour: "red" }), 400, "validation_error");
    assert.ok(e.issues?.length, "names the unknown field");
  });
  await s.step("missing handler_name", async () => {
    const e = await expectRefused(t, post(t, { payload: { text: "x" } }), 400, "validation_error");
    assert.ok(paths(e).includes("handler_name"), JSON.stringify(e));
  });
  await s.step("wrong types", async () => {
    const bad = [
      { handler_name: 5, payload: { text: "x" } },
      { ...ok, source: 7 },
      { ...ok, priority: "high" },
      { ...ok, priority: 1.5 },
      { ...ok, cost_estimate: "1" },
      { ...ok, total: -1 },
      { ...ok, queue: "has spaces" },
      { ...ok, run_at: "tomorrow" },
      { ...ok, parent_job_id: "not-a-ulid" },
    ];
    for (const body of bad) {
      const e = await expectRefused(t, post(t, body), 400, "validation_error");
      assert.ok(e.issues?.length, `issues for ${JSON.stringify(body)}`);
    }
  });
  await s.step("negative cost_estimate", async () => {
    const e = await expectRefused(t, post(t, { ...ok, cost_estimate: -0.01 }), 400);
    assert.ok(paths(e).includes("cost_estimate"), JSON.stringify(e));
  });
});

Deno.test("POST /api/pulse/jobs checks the handler, its payload schema and the parent", async (s) => {
  await using t = await world();
  await s.step("unknown handler is 422 unknown_handler", async () => {
    const body = { handler_name: "test.nope", payload: { text: "x" } };
    const e = await expectRefused(t, post(t, body), 422, "unknown_handler");
    assert.match(e.message, /test\.nope/);
  });
  await s.step("payload failing the handler's schema is 400 with payload.* paths", async () => {
    const body = { handler_name: "test.echo", payload: { text: 5, n: 1.5 } };
    const e = await expectRefused(t, post(t, body), 400, "validation_error");
    assert.deepEqual(paths(e).sort(), ["payload.n", "payload.text"]);
  });
  await s.step("missing parent is 422 unknown_parent", async () => {
    const body = { handler_name: "test.echo", payload: { text: "x" }, parent_job_id: NO_SUCH_ID };
    const e = await expectRefused(t, post(t, body), 422, "unknown_parent");
    assert.match(e.message, new RegExp(NO_SUCH_ID));
  });
});

Deno.test("/api/pulse/jobs/:id refuses ids with '/', '..' or non-ULIDs with 400 or 404", async () => {
  await using t = await world();
  const ids = ["abc", "a%2Fb", "..%2F..%2Fstats", "a..b", "a/b", "%00", NO_SUCH_ID];
  ids.push(NO_SUCH_ID.toLowerCase(), `${NO_SUCH_ID}0`, "x".repeat(3000));
  const routes = [
    ["GET", ""],
    ["GET", "/children"],
    ["GET", "/events"],
    ["POST", "/pause"],
    ["POST", "/resume"],
    ["POST", "/cancel"],
    ["POST", "/retry"],
    ["DELETE", ""],
  ];
  for (const id of ids) {
    for (const [method, tail] of routes) {
      const e = await expectRefused(t, () => t.call(method, `${JOBS}/${id}${tail}`), [400, 404]);
      if (id === NO_SUCH_ID) assert.equal(e.code, "not_found");
    }
  }
  // A bare dot segment is resolved by the URL parser before routing: /api/pulse/jobs/.. is /api/pulse/.
  for (const id of ["..", "%2E%2E", "%2e."]) {
    for (const method of ["GET", "DELETE"]) {
      await expectRefused(t, () => t.call(method, `${JOBS}/${id}`), [400, 404]);
    }
  }
});

Deno.test("GET /api/pulse/jobs answers 400 for a bad limit, status, cursor or field", async () => {
  await using t = await world();
  const queries = [
    "limit=0",
    "limit=-1",
    "limit=1e9",
    "limit=1001",
    "limit=abc",
    "limit=2.5",
    "status=nope",
    "status=QUEUED",
    "cursor=zz",
    "parent_job_id=..",
    "colour=red",
  ];
  for (const q of queries) {
    const e = await expectRefused(t, () => t.call("GET", `${JOBS}?${q}`), 400, "validation_error");
    assert.ok(e.issues?.length, `issues for ?${q}`);
  }
  const children = () => t.call("GET", `${JOBS}/${NO_SUCH_ID}/children?limit=0`);
  await expectRefused(t, children, 400, "validation_error");
});

Deno.test("an unknown route answers 404 not_found", async () => {
  await using t = await world();
  for (const [method, path] of [["GET", "/api/pulse/nope"], ["POST", "/api/nope"], ["GET", "/x"]]) {
    await expectRefused(t, () => t.call(method, path), 404, "not_found");
  }
  await expectRefused(t, () => t.call("PUT", JOBS, {}), 404, "not_found");
});

Deno.test("POST /api/pulse/jobs answers 413 payload_too_large for big bodies", async (s) => {
  await using t = await world();
  await s.step("body over 1 MiB", async () => {
    const body = { handler_name: "test.echo", payload: { text: "x".repeat(1024 * 1024 + 1) } };
    await expectRefused(t, post(t, body), 413, "payload_too_large");
  });
  await s.step("payload over 48 KiB serialised", async () => {
    const body = { handler_name: "test.echo", payload: { text: "x".repeat(48 * 1024) } };
    await expectRefused(t, post(t, body), 413, "payload_too_large");
  });
  await s.step("payload small as JSON but over 48 KiB as stored (doubles)", async () => {
    const body = { handler_name: "test.echo", payload: { text: "x", xs: Array(11_000).fill(0.5) } };
    await expectRefused(t, post(t, body), 413, "payload_too_large");
  });
  await s.step("payload under 48 KiB as parsed, over it once read back from KV", async () => {
    // 14,000 small ints: 28 KB of JSON and as parsed, ~70 KB once KV has read it back, which
    // a claim would then fail to write, forever.
    const body = { handler_name: "test.echo", payload: { text: "x", xs: Array(14_000).fill(1) } };
    await expectRefused(t, post(t, body), 413, "payload_too_large");
  });
  await s.step("a payload just under 48 KiB is accepted", async () => {
    const body = { handler_name: "test.echo", payload: { text: "x".repeat(48 * 1024 - 100) } };
    assert.equal((await t.call("POST", JOBS, body)).status, 201);
  });
});

Deno.test("routes that take no body refuse one with 400, and accept none or {}", async () => {
  await using t = await setup([echo], { start: false });
  const created = await t.call("POST", JOBS, { handler_name: "test.echo", payload: { text: "x" } });
  const id = created.body.id;
  const routes = [
    `${JOBS}/${id}/pause`,
    `${JOBS}/${id}/cancel`,
    "/api/pulse/pause",
    "/api/pulse/resume",
  ];
  for (const path of routes) {
    for (const body of [{ force: true }, "not json", [1]]) {
      const res = await t.call("POST", path, body);
      assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, "validation_error");
    }
  }
  const del = await t.call("DELETE", `${JOBS}/${id}`, { cascade: false });
  assert.equal(del.status, 400);
  assert.deepEqual(del.body.error.issues, [
    { path: "cascade", message: "Unknown field: this route takes no body" },
  ]);
  // Refused requests changed nothing: the job is still queued and the queue is not paused.
  assert.equal((await t.call("GET", `${JOBS}/${id}`)).body.status, "queued");
  assert.equal((await t.call("GET", "/api/pulse/budget")).body.queue_paused, false);
  assert.equal((await t.call("POST", `${JOBS}/${id}/pause`)).status, 200);
  assert.equal((await t.call("POST", `${JOBS}/${id}/resume`, {})).status, 200);
});
