import assert from "node:assert/strict";
import dataImport from "../handlers/data/import.ts";
import dataImportChunk from "../handlers/data/import_chunk.ts";
import type { Job } from "../src/types.ts";
import { setup, type World } from "./_setup.ts";

async function importDone(t: World, payload: Record<string, unknown>): Promise<Job> {
  const r = await t.call("POST", "/api/pulse/jobs", { handler_name: "data.import", payload });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const parent = await t.waitFor(
    r.body.id,
    (j) => j.status === "completed" || j.status === "failed",
  );
  for (let i = 0; i < 2000; i++) {
    const kids = await t.pulse.store.jobs.list({ parent_job_id: parent.id }, 1000);
    if (kids.jobs.every((k) => k.status === "completed")) return parent;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error("children did not complete");
}

async function rowKeys(t: World, dataset: string) {
  const data = t.pulse.store.data("data.import");
  const rows: unknown[] = [];
  for await (const e of data.list(["datasets", dataset, "rows"])) rows.push(e.value);
  return rows;
}

Deno.test("data.import into an existing dataset replaces its rows, leaving none of the old file", async () => {
  const dir = await Deno.makeTempDir();
  Deno.env.set("PULSE_IMPORT_ROOT", dir);
  try {
    await using t = await setup([dataImport, dataImportChunk]);
    const long = ["id,name", ...Array.from({ length: 25 }, (_, i) => `${i},n${i}`)].join("\n");
    await Deno.writeTextFile(`${dir}/long.csv`, long);
    await Deno.writeTextFile(`${dir}/short.csv`, "code,zip\nA,01234\nB,02139\n");
    const first = await importDone(t, { path: "long.csv", dataset: "same", chunk_size: 10 });
    assert.equal((first.result as { rows: number }).rows, 25);
    assert.equal((await rowKeys(t, "same")).length, 25);
    await importDone(t, { path: "short.csv", dataset: "same" });
    const rows = await rowKeys(t, "same");
    assert.deepEqual(rows, [{ code: "A", zip: "01234" }, { code: "B", zip: "02139" }]);
  } finally {
    Deno.env.delete("PULSE_IMPORT_ROOT");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("data.import stages rows of short decimals within KV's value limit", async () => {
  const dir = await Deno.makeTempDir();
  Deno.env.set("PULSE_IMPORT_ROOT", dir);
  try {
    await using t = await setup([dataImport, dataImportChunk]);
    // ~1.4× larger in V8's encoding than in JSON: a JSON-sized split would pass 64 KiB.
    const rows = Array.from({ length: 20_000 }, () => ({ a: 0.5, b: 0.25, c: 0.125 }));
    await Deno.writeTextFile(`${dir}/floats.json`, JSON.stringify(rows));
    const parent = await importDone(t, { path: "floats.json", chunk_size: 20_000 });
    assert.equal(parent.status, "completed", JSON.stringify(parent.error_context));
    assert.equal((await rowKeys(t, "floats")).length, 20_000);
  } finally {
    Deno.env.delete("PULSE_IMPORT_ROOT");
    await Deno.remove(dir, { recursive: true });
  }
});
