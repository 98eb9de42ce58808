import assert from "node:assert/strict";
import httpRequest from "../handlers/http/request.ts";
import type { Job } from "../src/types.ts";
import { busiestMinute } from "./_util.ts";
import { setup, type World } from "./_setup.ts";

/** A local HTTP server that records the (manual-clock) instant of every request it sees. */
function countingServer(now: () => number) {
  const seen: number[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    seen.push(now());
    return new Response("ok");
  });
  return { seen, url: `http://127.0.0.1:${server.addr.port}/hit`, close: () => server.shutdown() };
}

async function runUnderLimit(t: World, url: string, jobs: number) {
  const put = await t.call("PUT", "/api/pulse/budget", { max_calls_per_minute: 30 });
  assert.equal(put.status, 200);
  for (let i = 0; i < jobs; i++) {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "http.request",
      payload: { url },
    });
    assert.equal(r.status, 201);
  }
  // Move the manual clock 2 s at a time, only while no request is in flight (so a request is
  // seen by the server at the instant it was admitted), until every job is done (bounded).
  for (let step = 0; step < 1000; step++) {
    let stats = await t.pulse.store.stats.read();
    for (let i = 0; i < 200 && stats.running > 0; i++) {
      await new Promise((r) => setTimeout(r, 1));
      stats = await t.pulse.store.stats.read();
    }
    if (stats.completed === jobs) return;
    await new Promise((r) => setTimeout(r, 5)); // let resumed jobs be claimed before time moves
    if ((await t.pulse.store.stats.read()).running > 0) continue;
    t.clock.advance(2000);
  }
  throw new Error("Jobs did not all complete under the rate limit");
}

Deno.test("30 calls per minute hold for 200 http.request jobs on 4 workers", async () => {
  await using t = await setup([httpRequest]);
  const server = countingServer(() => t.clock.now());
  try {
    await runUnderLimit(t, server.url, 200);
    assert.equal(server.seen.length, 200);
    assert.ok(busiestMinute(server.seen) <= 30, `busiest minute saw ${busiestMinute(server.seen)}`);
    assert.equal(busiestMinute(server.seen), 30, "the limit is used, not just respected");
    const page = await t.pulse.store.jobs.list({}, 1000);
    assert.ok(page.jobs.every((j: Job) => j.status === "completed"));
  } finally {
    await server.close();
  }
});

Deno.test("30 calls per minute hold across two Pulse instances sharing one Deno.Kv", async () => {
  await using t = await setup([httpRequest]);
  t.another();
  const server = countingServer(() => t.clock.now());
  try {
    await runUnderLimit(t, server.url, 200);
    assert.equal(server.seen.length, 200);
    assert.ok(busiestMinute(server.seen) <= 30, `busiest minute saw ${busiestMinute(server.seen)}`);
  } finally {
    await server.close();
  }
});
