import assert from "node:assert/strict";
import Papa from "papaparse";
import { PermanentError } from "../src/mod.ts";
import {
  datasetName,
  formatOf,
  parseRows,
  resolveImportPath,
  splitForKv,
} from "../handlers/data/_import_lib.ts";

const VEGA = new URL("../node_modules/vega-datasets/data/", import.meta.url);

/** Asserts that `fn` throws a PermanentError with `code` whose message matches `message`. */
async function assertPermanent(fn: () => unknown, code: string, message: RegExp) {
  await assert.rejects(async () => await fn(), (err: unknown) => {
    assert.ok(err instanceof PermanentError, `expected a PermanentError, got ${err}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

const TRICKY_CSV = '\uFEFFname,zip,note\r\n"Doe, Jane",01234,"said ""hi""\r\nthen left"\r\n' +
  "Bob,00501,plain\r\n";

Deno.test("parseRows() keeps quoted newlines", () => {
  const { rows } = parseRows(TRICKY_CSV, "csv");
  assert.equal(rows.length, 2);
  assert.equal(rows[0].note, 'said "hi"\r\nthen left');
});

Deno.test("parseRows() reads commas, doubled quotes, CRLF and a BOM", () => {
  const { columns, rows } = parseRows(TRICKY_CSV, "csv");
  assert.deepEqual(columns, ["name", "zip", "note"]); // no BOM on "name"
  assert.equal(rows[0].name, "Doe, Jane");
  assert.deepEqual(rows[1], { name: "Bob", zip: "00501", note: "plain" });
});

Deno.test("parseRows() keeps values as strings, leading zeros included", () => {
  const { rows } = parseRows(TRICKY_CSV, "csv");
  assert.equal(rows[0].zip, "01234");
  assert.ok(rows.every((row) => Object.values(row).every((v) => typeof v === "string")));
});

Deno.test("parseRows() returns no rows for an empty CSV or a header alone", () => {
  assert.deepEqual(parseRows("", "csv"), { columns: [], rows: [] });
  assert.deepEqual(parseRows("a,b\r\n", "csv"), { columns: ["a", "b"], rows: [] });
});

Deno.test("parseRows() rejects inconsistent column counts as a parse error", async () => {
  await assertPermanent(() => parseRows("a,b\n1,2\n3\n", "csv"), "parse_error", /Record Length/);
  await assertPermanent(() => parseRows('a\n"open\n', "csv"), "parse_error", /Quote Not Closed/);
});

Deno.test("parseRows() rejects a CSV header with a repeated column", async () => {
  await assertPermanent(() => parseRows("a,b,a\n1,2,3\n", "csv"), "parse_error", /"a" appears/);
});

Deno.test("parseRows() matches papaparse on airports.csv", async () => {
  const text = await Deno.readTextFile(new URL("airports.csv", VEGA));
  const { columns, rows } = parseRows(text, "csv");
  const papa = Papa.parse<Record<string, string>>(text, { header: true, skipEmptyLines: true });
  assert.equal(rows.length, 3376);
  assert.equal(papa.data.length, rows.length);
  assert.deepEqual(columns, papa.meta.fields);
  assert.deepEqual(rows[0], papa.data[0]);
  assert.deepEqual(rows.at(-1), papa.data.at(-1));
});

Deno.test("parseRows() reads flights-2k.json like JSON.parse", async () => {
  const text = await Deno.readTextFile(new URL("flights-2k.json", VEGA));
  const expected = JSON.parse(text) as Record<string, unknown>[];
  const { columns, rows } = parseRows(text, "json");
  assert.equal(rows.length, expected.length);
  assert.deepEqual(columns, Object.keys(expected[0]));
  assert.deepEqual(rows[0], expected[0]);
});

Deno.test("parseRows() unions JSON keys in first-appearance order", () => {
  const { columns, rows } = parseRows('[{"a":1,"b":"x"},{"c":null,"a":2}]', "json");
  assert.deepEqual(columns, ["a", "b", "c"]);
  assert.deepEqual(rows[1], { c: null, a: 2 });
});

Deno.test("parseRows() rejects JSON that is not an array of objects", async () => {
  await assertPermanent(() => parseRows('{"a":1}', "json"), "parse_error", /array of objects/);
  await assertPermanent(() => parseRows("[{}, 3]", "json"), "parse_error", /item 1/);
  await assertPermanent(() => parseRows("[[1]]", "json"), "parse_error", /item 0/);
  await assertPermanent(() => parseRows("[{", "json"), "parse_error", /Cannot parse JSON/);
});

Deno.test("splitForKv() keeps each part within the limit and in order", () => {
  const rows = Array.from({ length: 500 }, (_, i) => ({ i, text: "é".repeat(i % 37) }));
  const limit = 1024;
  const parts = splitForKv(rows, limit);
  assert.ok(parts.length > 1);
  for (const part of parts) {
    assert.ok(new TextEncoder().encode(JSON.stringify(part)).length <= limit);
  }
  assert.deepEqual(parts.flat(), rows);
  assert.deepEqual(splitForKv([]), []);
});

Deno.test("splitForKv() rejects a row larger than the limit, naming it", async () => {
  const rows = [{ a: 1 }, { a: "x".repeat(200) }];
  await assertPermanent(() => splitForKv(rows, 100), "validation_error", /row 1/);
});

Deno.test("resolveImportPath() accepts paths under the root only", async () => {
  const base = await Deno.makeTempDir();
  try {
    const root = `${base}/root`;
    await Deno.mkdir(`${root}/sub`, { recursive: true });
    await Deno.writeTextFile(`${root}/sub/in.csv`, "a\n");
    await Deno.writeTextFile(`${base}/x`, "secret\n");
    await Deno.symlink(`${base}/x`, `${root}/link.csv`);
    const realIn = await Deno.realPath(`${root}/sub/in.csv`);

    assert.equal(await resolveImportPath("sub/in.csv", root), realIn);
    assert.equal(await resolveImportPath(`${root}/sub/../sub/in.csv`, root), realIn);
    const outside = /lies outside PULSE_IMPORT_ROOT/;
    await assertPermanent(() => resolveImportPath("../x", root), "validation_error", outside);
    await assertPermanent(() => resolveImportPath(`${base}/x`, root), "validation_error", outside);
    await assertPermanent(() => resolveImportPath("link.csv", root), "validation_error", outside);
    await assert.rejects(() => resolveImportPath("missing.csv", root), Deno.errors.NotFound);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("formatOf() prefers the explicit format, then the extension", async () => {
  assert.equal(formatOf("a/b.csv"), "csv");
  assert.equal(formatOf("B.JSON"), "json");
  assert.equal(formatOf("data.txt", "csv"), "csv");
  assert.equal(formatOf("https://example.org/x.json?download=1#top"), "json");
  assert.equal(formatOf("https://example.org/get?file=x.csv", "csv"), "csv");
  await assertPermanent(
    () => formatOf("https://example.org/get?f=x.csv"),
    "validation_error",
    /format/,
  );
  await assertPermanent(() => formatOf("notes.txt"), "validation_error", /"notes.txt"/);
  await assertPermanent(() => formatOf("csv"), "validation_error", /unknown format/);
});

Deno.test("datasetName() uses the sanitised base name", () => {
  assert.equal(datasetName("/data/airports.csv"), "airports");
  assert.equal(datasetName("sub/my data (v2).csv"), "my_data__v2_");
  assert.equal(datasetName("https://example.org/d/flights-2k.json?x=1"), "flights-2k");
  assert.equal(datasetName("https://example.org/d/my%20data.csv"), "my_data");
  assert.equal(datasetName("archive.tar.csv"), "archive.tar");
  assert.equal(datasetName(".csv"), "dataset");
});
