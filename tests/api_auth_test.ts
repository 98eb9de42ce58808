import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import { setup } from "./_setup.ts";

const noop = defineHandler({
  name: "test.noop",
  description: "Does nothing",
  payload: z.object({}).optional(),
  run: () => null,
});

Deno.test("with a token, /api/ routes answer 401 unauthorized unless the bearer matches", async () => {
  await using t = await setup([noop], { token: "s3cret-token" });
  const app = t.pulse.app;
  for (
    const auth of [undefined, "Bearer wrong", "Bearer s3cret-tokenX", "s3cret-token", "Basic x"]
  ) {
    const res = await app.request("/api/pulse/stats", {
      headers: auth === undefined ? {} : { authorization: auth },
    });
    assert.equal(res.status, 401, `header ${auth}`);
    const body = await res.json();
    assert.equal(body.error.code, "unauthorized");
  }
  const post = await app.request("/api/pulse/jobs", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ handler_name: "test.noop" }),
  });
  assert.equal(post.status, 401);
  assert.equal((await t.pulse.store.stats.read()).total, 0, "a refused request changes nothing");

  const ok = await app.request("/api/pulse/stats", {
    headers: { authorization: "Bearer s3cret-token" },
  });
  assert.equal(ok.status, 200);
  assert.equal((await app.request("/healthz")).status, 200, "health is not behind the token");
});

Deno.test("without a token, /api/ routes answer without Authorization", async () => {
  await using t = await setup([noop]);
  assert.equal((await t.pulse.app.request("/api/pulse/stats")).status, 200);
});
