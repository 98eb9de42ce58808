/**
 * Job histories: the newest entries wait in the job's record and move to one history key when
 * there are 8 (src/store/_writes.ts). The history route shows every entry once, in order; the
 * record's entries never show on the wire; histories written one key per entry still read.
 */
import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import { encodeJob } from "../src/store/_codec.ts";
import { decodeEvents, decodeJob, recordHistory } from "../src/store/mod.ts";
import { setup } from "./_setup.ts";

const JOBS = "/api/pulse/jobs";
const noop = defineHandler({
  name: "test.noop",
  description: "Returns null",
  payload: z.object({}),
  run: () => null,
});

Deno.test("a history longer than the record holds reads whole and in order", async () => {
  await using t = await setup([noop], { start: false });
  const id = (await t.call("POST", JOBS, { handler_name: "test.noop", payload: {} })).body.id;
  // 1 enqueue + 2 × 10 pause/resume = 21 entries: two keys of 8, five in the record.
  for (let i = 0; i < 10; i++) {
    assert.equal((await t.call("POST", `${JOBS}/${id}/pause`)).status, 200);
    assert.equal((await t.call("POST", `${JOBS}/${id}/resume`)).status, 200);
  }
  const { body } = await t.call("GET", `${JOBS}/${id}/events`);
  assert.deepEqual(body.events.map((e: { seq: number }) => e.seq), range(1, 21));
  assert.deepEqual(
    body.events.map((e: { event: string }) => e.event),
    ["enqueue", ...Array(10).fill(["pause", "resume"]).flat()],
  );
  const keys = await Array.fromAsync(t.kv.list({ prefix: ["pulse", "events", id] }));
  assert.deepEqual(keys.map((e) => e.key[3]), [1, 9]);
  assert.deepEqual(keys.map((e) => decodeEvents(e.value).length), [8, 8]);
  const record = decodeJob(id, (await t.kv.get(["pulse", "job", id])).value);
  assert.deepEqual(recordHistory(record).map((e) => e.seq), range(17, 21));
});

Deno.test("no answer of the API carries the record's history entries", async () => {
  await using t = await setup([noop], { start: false });
  const created = await t.call("POST", JOBS, { handler_name: "test.noop", payload: {} });
  const id = created.body.id;
  const batch = await t.call("POST", `${JOBS}/batch`, {
    jobs: [{ handler_name: "test.noop", payload: {} }],
  });
  const answers = [
    created.body,
    batch.body.jobs[0].job,
    (await t.call("GET", `${JOBS}/${id}`)).body,
    ...(await t.call("GET", JOBS)).body.jobs,
    (await t.call("POST", `${JOBS}/${id}/pause`)).body,
  ];
  for (const job of answers) {
    assert.equal(typeof job.id, "string");
    assert.ok(!("history" in job), JSON.stringify(job));
  }
  // …while the record does hold them.
  const record = decodeJob(id, (await t.kv.get(["pulse", "job", id])).value);
  assert.deepEqual(recordHistory(record).map((e) => e.event), ["enqueue", "pause"]);
});

Deno.test("a history written one key per entry (before entries waited in the record) reads on", async () => {
  await using t = await setup([noop], { start: false });
  const id = (await t.call("POST", JOBS, { handler_name: "test.noop", payload: {} })).body.id;
  // Rewrite the job as an earlier version left it: the entry in a key, none in the record.
  const stored = decodeJob(id, (await t.kv.get(["pulse", "job", id])).value);
  const [first] = recordHistory(stored);
  // As text, one entry per key, the way versions before compact entries stored it.
  const asText = [first.seq, first.at, first.event, first.from, first.to, first.attempt];
  await t.kv.atomic()
    .set(["pulse", "events", id, 1], asText)
    .set(["pulse", "job", id], encodeJob({ ...stored, history: undefined }))
    .commit();
  assert.equal((await t.call("POST", `${JOBS}/${id}/pause`)).status, 200);
  assert.equal((await t.call("POST", `${JOBS}/${id}/cancel`)).status, 200);
  const { body } = await t.call("GET", `${JOBS}/${id}/events`);
  assert.deepEqual(
    body.events.map((e: { seq: number; event: string }) => [e.seq, e.event]),
    [[1, "enqueue"], [2, "pause"], [3, "cancel"]],
  );
});

function range(from: number, to: number) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
