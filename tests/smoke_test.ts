import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import { setup } from "./_setup.ts";

const echo = defineHandler({
  name: "test.echo",
  description: "Echoes",
  payload: z.object({ text: z.string() }),
  run: (ctx) => ({ echoed: ctx.payload.text }),
});

Deno.test("POST /api/pulse/jobs runs the job to completed with its result", async () => {
  await using t = await setup([echo]);
  const res = await t.call("POST", "/api/pulse/jobs", {
    handler_name: "test.echo",
    payload: { text: "hi" },
  });
  assert.equal(res.status, 201);
  const job = await t.waitFor(res.body.id, (j) => j.status === "completed");
  assert.deepEqual(job.result, { echoed: "hi" });
  const events = await t.call("GET", `/api/pulse/jobs/${job.id}/events`);
  assert.deepEqual(events.body.events.map((e: { event: string }) => e.event), [
    "enqueue",
    "claim",
    "complete",
  ]);
});
