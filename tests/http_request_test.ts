import assert from "node:assert/strict";
import httpRequest, { MAX_BODY_CHARS, retryAfterMs } from "../handlers/http/request.ts";
import { setup } from "./_setup.ts";

/** A local HTTP server whose answers are scripted per path; records what it received. */
function scriptedServer(script: Record<string, (n: number) => Response>) {
  const calls: { path: string; method: string; body: string; contentType: string | null }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    calls.push({
      path,
      method: req.method,
      body: await req.text(),
      contentType: req.headers.get("content-type"),
    });
    const n = calls.filter((c) => c.path === path).length;
    return script[path]?.(n) ?? new Response("no script", { status: 418 });
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  return { calls, base, close: () => server.shutdown() };
}

Deno.test("http.request retries 429 no sooner than Retry-After, then completes", async () => {
  await using t = await setup([httpRequest]);
  const srv = scriptedServer({
    "/busy": (n) =>
      n === 1
        ? new Response("slow down", { status: 429, headers: { "retry-after": "7" } })
        : new Response("ok"),
  });
  try {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/busy`, cost_usd: 0.01 },
    });
    const failedOnce = await t.waitFor(
      r.body.id,
      (j) => j.retry_count === 1 && j.status === "queued",
    );
    assert.equal(
      Date.parse(failedOnce.run_at) - Date.parse(failedOnce.updated_at),
      7000,
      "Retry-After 7 s wins over the 1 s backoff",
    );
    assert.equal(failedOnce.error_context?.code, "network_error");
    t.clock.advance(6999);
    const still = await t.waitFor(r.body.id, (j) => j.status === "queued");
    assert.equal(still.attempt, 1);
    t.clock.advance(1);
    const done = await t.waitFor(r.body.id, (j) => j.status === "completed");
    assert.deepEqual((done.result as { status: number }).status, 200);
    assert.equal(done.cost_actual, 0.02, "each attempt's cost is recorded");
    assert.equal(srv.calls.length, 2);
  } finally {
    await srv.close();
  }
});

Deno.test("http.request fails a 404 at once and retries a 503 until spent", async () => {
  await using t = await setup([httpRequest]);
  const srv = scriptedServer({
    "/gone": () => new Response("nope", { status: 404 }),
    "/down": () => new Response("down", { status: 503 }),
  });
  try {
    const gone = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/gone` },
    });
    const g = await t.waitFor(gone.body.id, (j) => j.status === "failed");
    assert.equal(g.attempt, 1);
    assert.equal(g.error_context?.retryable, false);
    const down = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/down` },
    });
    const d = await t.waitFor(down.body.id, (j) => j.status === "failed", { stepMs: 500 });
    assert.equal(d.attempt, 3);
    assert.equal(d.retry_count, 2);
    assert.equal(srv.calls.filter((c) => c.path === "/down").length, 3);
  } finally {
    await srv.close();
  }
});

Deno.test("http.request sends string bodies as they are and others as JSON; cuts long bodies", async () => {
  await using t = await setup([httpRequest]);
  const long = "x".repeat(MAX_BODY_CHARS + 10);
  const srv = scriptedServer({ "/echo": () => new Response(long, { headers: { "x-test": "1" } }) });
  try {
    const a = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: {
        url: `${srv.base}/echo`,
        method: "POST",
        body: "a=1&b=2",
        headers: { "content-type": "text/plain" },
      },
    });
    const b = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/echo`, method: "PUT", body: { a: [1, 2] } },
    });
    const ja = await t.waitFor(a.body.id, (j) => j.status === "completed");
    await t.waitFor(b.body.id, (j) => j.status === "completed");
    const ra = ja.result as { body: string; truncated: boolean; headers: Record<string, string> };
    assert.equal(ra.body.length, MAX_BODY_CHARS);
    assert.equal(ra.truncated, true);
    assert.equal(ra.headers["x-test"], "1");
    const sent = srv.calls.map((c) => [c.method, c.body, c.contentType]);
    assert.deepEqual(sent.find((s) => s[0] === "POST"), ["POST", "a=1&b=2", "text/plain"]);
    assert.deepEqual(sent.find((s) => s[0] === "PUT"), ["PUT", '{"a":[1,2]}', "application/json"]);
  } finally {
    await srv.close();
  }
});

Deno.test("http.request refuses hosts outside PULSE_HTTP_ALLOW before any call", async () => {
  await using t = await setup([httpRequest]);
  const srv = scriptedServer({ "/x": () => new Response("ok") });
  Deno.env.set("PULSE_HTTP_ALLOW", "example.invalid");
  try {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/x`, cost_usd: 1 },
    });
    const j = await t.waitFor(r.body.id, (x) => x.status === "failed");
    assert.match(j.error_context!.message, /PULSE_HTTP_ALLOW/);
    assert.equal(j.cost_actual, 0);
    assert.equal(srv.calls.length, 0);
  } finally {
    Deno.env.delete("PULSE_HTTP_ALLOW");
    await srv.close();
  }
});

Deno.test("http.request payload rejects non-http URLs at enqueue", async () => {
  await using t = await setup([httpRequest], { start: false });
  for (const url of ["file:///etc/passwd", "ftp://127.0.0.1/x", "not a url"]) {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url },
    });
    assert.equal(r.status, 400, url);
    assert.equal(r.body.error.issues[0].path, "payload.url");
  }
});

Deno.test("retryAfterMs() reads delta-seconds and HTTP dates", () => {
  const now = Date.UTC(2026, 0, 1);
  assert.equal(retryAfterMs("120", now), 120_000);
  assert.equal(retryAfterMs(new Date(now + 5000).toUTCString(), now), 5000);
  assert.equal(retryAfterMs("soon", now), undefined);
  assert.equal(retryAfterMs(null, now), undefined);
});

Deno.test("http.request checks every redirect hop against PULSE_HTTP_ALLOW", async () => {
  await using t = await setup([httpRequest]);
  const inner = scriptedServer({ "/secret": () => new Response("secret") });
  const outer = scriptedServer({
    "/hop": () =>
      new Response(null, { status: 302, headers: { location: `${inner.base}/secret` } }),
    "/ok": () => new Response(null, { status: 302, headers: { location: "/final" } }),
    "/final": () => new Response("landed"),
  });
  Deno.env.set("PULSE_HTTP_ALLOW", new URL(outer.base).host);
  try {
    const bad = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${outer.base}/hop` },
    });
    const j = await t.waitFor(bad.body.id, (x) => x.status === "failed");
    assert.match(j.error_context!.message, /PULSE_HTTP_ALLOW/);
    assert.equal(
      inner.calls.length,
      0,
      "the redirect target outside the allowlist is never called",
    );
    const good = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${outer.base}/ok` },
    });
    const g = await t.waitFor(good.body.id, (x) => x.status === "completed");
    assert.equal((g.result as { body: string }).body, "landed");
  } finally {
    Deno.env.delete("PULSE_HTTP_ALLOW");
    await inner.close();
    await outer.close();
  }
});

Deno.test("http.request charges nothing for a request it could not send", async () => {
  await using t = await setup([httpRequest]);
  const srv = scriptedServer({ "/x": () => new Response("ok") });
  try {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/x`, headers: { "bad header": "x" }, cost_usd: 0.5 },
    });
    const j = await t.waitFor(r.body.id, (x) => x.status === "failed");
    assert.equal(j.attempt, 1, "a malformed request is not retried");
    assert.equal(j.cost_actual, 0);
    assert.equal((await t.call("GET", "/api/pulse/budget")).body.spend_today, 0);
  } finally {
    await srv.close();
  }
});

Deno.test("http.request caps Retry-After at one hour", async () => {
  await using t = await setup([httpRequest]);
  const srv = scriptedServer({
    "/later": () => new Response("", { status: 429, headers: { "retry-after": "999999999" } }),
  });
  try {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/later` },
    });
    const j = await t.waitFor(r.body.id, (x) => x.retry_count === 1 && x.status === "queued");
    assert.equal(Date.parse(j.run_at) - Date.parse(j.updated_at), 3_600_000);
  } finally {
    await srv.close();
  }
});

Deno.test("http.request admits every redirect hop under the rate limit", async () => {
  await using t = await setup([httpRequest]);
  const srv = scriptedServer({
    "/a": () => new Response(null, { status: 302, headers: { location: "/b" } }),
    "/b": () => new Response(null, { status: 302, headers: { location: "/c" } }),
    "/c": () => new Response("end"),
  });
  try {
    await t.call("PUT", "/api/pulse/budget", { max_calls_per_minute: 2 });
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url: `${srv.base}/a` },
    });
    const j = await t.waitFor(r.body.id, (x) => x.status === "paused");
    assert.equal(j.pulse_state?.pause_reason, "rate_limit");
    assert.deepEqual(
      srv.calls.map((c) => c.path),
      ["/a", "/b"],
      "the third request waits for the window",
    );
  } finally {
    await srv.close();
  }
});
