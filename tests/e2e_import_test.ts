/**
 * End to end: `main.ts` as a real process imports CSV and JSON files through the HTTP API with
 * the shipped `data.import` handler, stops on SIGTERM, and the rows are read back from the KV
 * file. Expected values come from parsers other than the product's (papaparse, JSON.parse).
 */
import assert from "node:assert/strict";
import { decodeJob } from "../src/store/mod.ts";
import { join } from "node:path";
import Papa from "papaparse";
import {
  Fatal,
  getJob,
  type Json,
  listAll,
  poll,
  type PulseProcess,
  REPO_ROOT,
  startHealthy,
  tempDir,
  waitCompleted,
  withKv,
} from "./_process.ts";
import { zeroCounts } from "./_util.ts";

const VEGA = join(REPO_ROOT, "node_modules/vega-datasets/data");
const DEADLINE_MS = 60_000;

/**
 * CRLF line ends, a UTF-8 BOM, a quoted field with a newline inside, quoted fields with `""`
 * and with a comma, ZIP codes with leading zeros, non-ASCII text.
 */
const TRICKY_CSV = "\uFEFFid,name,zip,note,city\r\n" +
  '1,"Doe, Jane",01234,"said ""hi""",Boston\r\n' +
  '2,Bob,00501,"line one\nline two",New York\r\n' +
  '3,"Émile ""E."" Zola",10001,plain,"Paris, FR"\r\n';

/** The rows of TRICKY_CSV, written out by hand. */
const TRICKY_ROWS = [
  { id: "1", name: "Doe, Jane", zip: "01234", note: 'said "hi"', city: "Boston" },
  { id: "2", name: "Bob", zip: "00501", note: "line one\nline two", city: "New York" },
  { id: "3", name: 'Émile "E." Zola', zip: "10001", note: "plain", city: "Paris, FR" },
];

interface Expected {
  dataset: string;
  rows: Record<string, unknown>[];
  columns: string[];
  chunkSize: number;
}

/** CSV rows and columns by papaparse (header row, values kept as strings). */
function papaRows(text: string): { rows: Record<string, string>[]; columns: string[] } {
  const parsed: { data: Record<string, string>[]; errors: unknown[]; meta: { fields?: string[] } } =
    Papa.parse(text, { header: true, skipEmptyLines: true, dynamicTyping: false });
  assert.deepEqual(parsed.errors, [], "papaparse reported errors");
  const columns = (parsed.meta.fields ?? []).map((c: string) => c.replace(/^\uFEFF/, ""));
  const rows = parsed.data.map((r: Record<string, string>) =>
    Object.fromEntries(Object.entries(r).map(([k, v]) => [k.replace(/^\uFEFF/, ""), v]))
  );
  return { rows, columns };
}

/** JSON rows and the union of keys in first-appearance order. */
function jsonRows(text: string): { rows: Record<string, unknown>[]; columns: string[] } {
  const rows = JSON.parse(text) as Record<string, unknown>[];
  const columns = new Set<string>();
  for (const r of rows) for (const k of Object.keys(r)) columns.add(k);
  return { rows, columns: [...columns] };
}

/** Polls until the parent has `count` children and all are completed (paged, small pages). */
function waitChildren(p: PulseProcess, parentId: string, count: number): Promise<Json[]> {
  return poll(`${count} completed children of ${parentId}`, async () => {
    const children = await listAll(p, `/api/pulse/jobs/${parentId}/children`, 3);
    const bad = children.find((c) => c.status === "failed" || c.status === "cancelled");
    if (bad) throw new Fatal(new Error(`child ended ${bad.status}: ${JSON.stringify(bad)}`));
    if (children.length > count) {
      throw new Fatal(new Error(`parent ${parentId} has ${children.length} children > ${count}`));
    }
    const done = children.length === count && children.every((c) => c.status === "completed");
    return done ? children : undefined;
  }, { timeoutMs: DEADLINE_MS, intervalMs: 100 });
}

/** Every row of a dataset in the KV file, by index. */
async function rowsInKv(kv: Deno.Kv, dataset: string): Promise<Map<number, unknown>> {
  const prefix = ["pulse", "data", "data.import", "datasets", dataset, "rows"];
  const rows = new Map<number, unknown>();
  for await (const e of kv.list({ prefix })) {
    const index = e.key[prefix.length];
    assert.equal(typeof index, "number", `row key ${JSON.stringify(e.key)}`);
    assert.equal(e.key.length, prefix.length + 1, `row key ${JSON.stringify(e.key)}`);
    assert.ok(!rows.has(index as number), `row ${String(index)} stored twice`);
    rows.set(index as number, e.value);
  }
  return rows;
}

Deno.test("main.ts imports airports.csv, flights-2k.json and a tricky CSV end to end", async () => {
  await using root = await tempDir("pulse_e2e_import_root_");
  await using state = await tempDir("pulse_e2e_import_kv_");
  const kvPath = join(state.path, "pulse.sqlite");

  // The import root holds copies of the vega files and the hand-written CSV.
  await Deno.mkdir(join(root.path, "vega"));
  await Deno.copyFile(join(VEGA, "airports.csv"), join(root.path, "vega/airports.csv"));
  await Deno.copyFile(join(VEGA, "flights-2k.json"), join(root.path, "flights-2k.json"));
  await Deno.writeTextFile(join(root.path, "tricky.csv"), TRICKY_CSV);

  const airportsText = await Deno.readTextFile(join(root.path, "vega/airports.csv"));
  const flightsText = await Deno.readTextFile(join(root.path, "flights-2k.json"));
  const tricky = papaRows(TRICKY_CSV);
  // The independent parser agrees with the hand-written expectation first.
  assert.deepEqual(tricky.rows, TRICKY_ROWS);
  assert.deepEqual(tricky.columns, ["id", "name", "zip", "note", "city"]);

  const expected: Record<string, Expected> = {
    airports: { dataset: "airports", ...papaRows(airportsText), chunkSize: 500 },
    flights: { dataset: "flights-2k", ...jsonRows(flightsText), chunkSize: 1000 }, // default
    tricky: { dataset: "tricky", ...tricky, chunkSize: 2 },
  };
  assert.ok(expected.airports.rows.length > 3000, "airports.csv looks truncated");
  assert.equal(expected.flights.rows.length, 2000);

  const payloads: Record<string, Json> = {
    // Relative to PULSE_IMPORT_ROOT, absolute under it, and relative again.
    airports: { path: "vega/airports.csv", chunk_size: 500 },
    flights: { path: join(root.path, "flights-2k.json") },
    tricky: { path: "tricky.csv", chunk_size: 2 },
  };

  const started = Date.now();
  await using p = await startHealthy({
    PULSE_KV_PATH: kvPath,
    PULSE_IMPORT_ROOT: root.path,
    PULSE_HANDLERS_DIR: join(REPO_ROOT, "handlers"),
    PULSE_WORKERS: "4",
  }, { timeoutMs: DEADLINE_MS });

  const ids: Record<string, string> = {};
  for (const [name, payload] of Object.entries(payloads)) {
    const res = await p.api("POST", "/api/pulse/jobs", { handler_name: "data.import", payload });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.status, "queued");
    ids[name] = res.body.id;
  }

  let totalJobs = 0;
  for (const [name, exp] of Object.entries(expected)) {
    const parent = await waitCompleted(p, ids[name]);
    const n = exp.rows.length;
    const chunks = Math.ceil(n / exp.chunkSize);
    const children = await waitChildren(p, ids[name], chunks);
    totalJobs += 1 + children.length;

    // The parent's result, from the independent parser.
    assert.deepEqual(parent.result, {
      dataset: exp.dataset,
      rows: n,
      columns: exp.columns,
      first_row: exp.rows[0],
    }, `result of ${name}`);
    assert.deepEqual(parent.progress, { current: n, total: n }, `progress of ${name}`);

    // One child per chunk, each chunk once, covering every row in order.
    assert.equal(children.length, chunks, `children of ${name}`);
    const byChunk = [...children].sort((a, b) => a.payload.chunk - b.payload.chunk);
    byChunk.forEach((c, i) => {
      assert.equal(c.handler_name, "data.import.chunk");
      assert.equal(c.parent_job_id, ids[name]);
      assert.equal(c.payload.chunk, i, `chunk numbers of ${name}`);
      assert.equal(c.payload.first_row, i * exp.chunkSize);
      assert.equal(c.payload.rows, Math.min(exp.chunkSize, n - i * exp.chunkSize));
      assert.deepEqual(c.result, { dataset: exp.dataset, chunk: i, rows: c.payload.rows });
    });
    assert.equal(byChunk.reduce((s, c) => s + c.payload.rows, 0), n);
  }
  // The ZIP code kept its leading zero, as a string.
  const trickyParent = await getJob(p, ids.tricky);
  assert.equal(trickyParent.result.first_row.zip, "01234");

  // Stats agree with the jobs the list route shows (every job exactly once).
  const all = await listAll(p, "/api/pulse/jobs", 5);
  assert.equal(new Set(all.map((j) => j.id)).size, all.length, "a job listed twice");
  assert.equal(all.length, totalJobs);
  const counted: Record<string, number> = zeroCounts();
  for (const j of all) counted[j.status]++;
  const stats = await p.api("GET", "/api/pulse/stats");
  assert.equal(stats.status, 200);
  const statsBody: Json = stats.body;
  assert.deepEqual(statsBody, { ...counted, total: all.length });
  assert.equal(counted.completed, totalJobs);

  // Graceful stop.
  p.kill("SIGTERM");
  const status = await p.waitExit(30_000);
  assert.equal(status.code, 0, `exit code; stderr:\n${p.stderr()}`);
  assert.match(p.stdout(), /Pulse stopped/);

  // Read the rows back from the KV file ourselves.
  await withKv(kvPath, async (kv) => {
    for (const [name, exp] of Object.entries(expected)) {
      const rows = await rowsInKv(kv, exp.dataset);
      assert.equal(rows.size, exp.rows.length, `rows of ${name} in KV`);
      for (let i = 0; i < exp.rows.length; i++) {
        assert.ok(rows.has(i), `row ${i} of ${name} missing`);
      }
      if (name === "airports") {
        const last = exp.rows.length - 1;
        assert.deepEqual(rows.get(0), exp.rows[0], "first airport");
        assert.deepEqual(rows.get(last), exp.rows[last], "last airport");
      }
      // Every row is cheap to compare, so compare every row of every dataset.
      for (let i = 0; i < exp.rows.length; i++) {
        assert.deepEqual(rows.get(i), exp.rows[i], `row ${i} of ${name}`);
      }
      const meta = await kv.get(["pulse", "data", "data.import", "datasets", exp.dataset, "meta"]);
      assert.deepEqual(
        (meta.value as { rows: number; columns: string[] } | null)?.rows,
        exp.rows.length,
      );
    }
    const zip = await kv.get(["pulse", "data", "data.import", "datasets", "tricky", "rows", 0]);
    assert.equal((zip.value as { zip: unknown }).zip, "01234");

    // Staging is cleaned up, and nothing is left running or leased.
    const staged = await Array.fromAsync(
      kv.list({ prefix: ["pulse", "data", "data.import", "staging"] }),
    );
    assert.equal(staged.length, 0, "staged rows left behind");
    const jobs = (await Array.fromAsync(kv.list({ prefix: ["pulse", "job"] }))).map((e) => ({
      key: e.key,
      value: decodeJob(e.key[2] as string, e.value),
    }));
    assert.equal(jobs.length, totalJobs);
    assert.deepEqual(jobs.filter((e) => e.value.status === "running").map((e) => e.key), []);
    assert.equal(jobs.filter((e) => e.value.status === "completed").length, totalJobs);
    const runningIndex = await Array.fromAsync(
      kv.list({ prefix: ["pulse", "by_status", "running"] }),
    );
    assert.equal(runningIndex.length, 0, "running index not empty");
  });
  console.log(`e2e import: ${totalJobs} jobs in ${Date.now() - started} ms`);
});
