/**
 * Pure helpers shared by `data.import` and `data.import.chunk`: where a file may be read from,
 * which format it has, how its rows are parsed and how they are cut to fit KV values.
 * The leading `_` keeps handler discovery from loading this file as a handler.
 *
 * @module
 */
import { serialize } from "node:v8";
import { isAbsolute, relative, resolve, sep } from "node:path";
import { parse } from "csv-parse/sync";
import { PermanentError } from "../../src/mod.ts";

/** Formats `data.import` understands. */
export type ImportFormat = "csv" | "json";

/** Parsed rows plus the column names in file order. */
export interface ParsedRows {
  columns: string[];
  rows: Record<string, unknown>[];
}

const URL_LIKE = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * Resolves `path` (absolute, or relative to `root`) to a real path that lies under `root`.
 * Symlinks are resolved on both sides, so a link inside the root cannot point out of it.
 * A missing file lets `Deno.errors.NotFound` through (classified as `file_not_found`).
 *
 * @throws {PermanentError} `validation_error` when the path lies outside `root`
 */
export async function resolveImportPath(path: string, root: string): Promise<string> {
  const outside = () =>
    new PermanentError(
      `Cannot import "${path}": it lies outside PULSE_IMPORT_ROOT "${root}"`,
      "validation_error",
    );
  // Refuse lexically first, so probing outside the root cannot tell "missing" from "refused".
  if (!isUnder(resolve(root, path), resolve(root))) throw outside();
  const realRoot = await Deno.realPath(root);
  const real = await Deno.realPath(resolve(root, path));
  if (!isUnder(real, realRoot)) throw outside();
  return real;
}

function isUnder(child: string, parent: string): boolean {
  const rel = relative(parent, child);
  // `..foo` is a legal name inside the root; only a whole `..` segment leaves it.
  return rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

/**
 * The format of a file: `format` when given, else its extension (`.csv`/`.json`, any case).
 * For a URL the query string and fragment are ignored.
 *
 * @throws {PermanentError} `validation_error` when neither tells a known format
 */
export function formatOf(pathOrUrl: string, format?: ImportFormat): ImportFormat {
  if (format) return format;
  const ext = /\.([^./\\]*)$/.exec(pathPart(pathOrUrl))?.[1]?.toLowerCase();
  if (ext === "csv" || ext === "json") return ext;
  throw new PermanentError(
    `Cannot import "${pathOrUrl}": unknown format, expected a ".csv" or ".json" name or a "format"`,
    "validation_error",
  );
}

/** The path of a URL (no query, no fragment), or a file path unchanged. */
function pathPart(pathOrUrl: string): string {
  if (!URL_LIKE.test(pathOrUrl)) return pathOrUrl;
  try {
    return new URL(pathOrUrl).pathname;
  } catch {
    return pathOrUrl.replace(/[?#].*$/, "");
  }
}

/**
 * Parses CSV (RFC 4180, header row, optional UTF-8 BOM, values kept as strings) or JSON (an
 * array of objects; columns are the union of keys in first-appearance order).
 *
 * @throws {PermanentError} `parse_error` for malformed input
 */
export function parseRows(text: string, format: ImportFormat): ParsedRows {
  return format === "csv" ? parseCsv(text) : parseJson(text);
}

function parseCsv(text: string): ParsedRows {
  let records: string[][];
  try {
    // No `cast`: "01234" must stay "01234". Truly empty lines (e.g. trailing ones) are not rows.
    records = parse(text, { bom: true, skip_empty_lines: true });
  } catch (err) {
    throw new PermanentError(`Cannot parse CSV: ${(err as Error).message}`, "parse_error");
  }
  const [columns = [], ...body] = records;
  const seen = new Set<string>();
  for (const column of columns) {
    if (seen.has(column)) {
      // Two equal names would silently overwrite each other's values in a row object.
      throw new PermanentError(`Cannot parse CSV: column "${column}" appears twice`, "parse_error");
    }
    seen.add(column);
  }
  // fromEntries defines own properties, so a "__proto__" column cannot touch the prototype.
  const rows = body.map((values) => Object.fromEntries(columns.map((c, i) => [c, values[i]])));
  return { columns, rows };
}

function parseJson(text: string): ParsedRows {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new PermanentError(`Cannot parse JSON: ${(err as Error).message}`, "parse_error");
  }
  if (!Array.isArray(data)) {
    throw new PermanentError("Cannot parse JSON: expected an array of objects", "parse_error");
  }
  const columns = new Set<string>();
  data.forEach((row, i) => {
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      throw new PermanentError(
        `Cannot parse JSON: item ${i} is not an object, expected an array of objects`,
        "parse_error",
      );
    }
    for (const key of Object.keys(row)) columns.add(key);
  });
  return { columns: [...columns], rows: data };
}

/**
 * Splits rows into consecutive parts whose JSON serialisation (UTF-8) is at most `maxBytes`
 * each, so every part fits one KV value (64 KiB) with room to spare.
 *
 * @throws {PermanentError} `validation_error` when a single row alone exceeds `maxBytes`
 */
export function splitForKv(rows: unknown[], maxBytes = 48 * 1024): unknown[][] {
  const encoder = new TextEncoder();
  const parts: unknown[][] = [];
  let part: unknown[] = [];
  let size = 2; // "[]"
  rows.forEach((row, i) => {
    // KV stores V8's encoding, which can be larger than JSON (short decimals: 9 bytes each);
    // JSON turns `undefined` array items into null.
    const rowBytes = Math.max(
      encoder.encode(JSON.stringify(row) ?? "null").length,
      serialize(row).length,
    );
    if (rowBytes + 2 > maxBytes) {
      throw new PermanentError(
        `Cannot store row ${i}: it takes ${rowBytes} bytes, more than the ${maxBytes} allowed`,
        "validation_error",
      );
    }
    // Every item after the first also costs a ",".
    if (part.length > 0 && size + 1 + rowBytes > maxBytes) {
      parts.push(part);
      part = [];
      size = 2;
    }
    size += part.length === 0 ? rowBytes : rowBytes + 1;
    part.push(row);
  });
  if (part.length > 0) parts.push(part);
  return parts;
}

/**
 * A dataset name from a path or URL: the base name without extension, with every character
 * outside `[A-Za-z0-9_.-]` replaced by `_` (at most 100 characters; "dataset" when empty).
 */
export function datasetName(pathOrUrl: string): string {
  let base = pathPart(pathOrUrl).split(/[/\\]/).pop() ?? "";
  if (URL_LIKE.test(pathOrUrl)) {
    try {
      base = decodeURIComponent(base); // "my%20data.csv" -> "my_data", not "my_20data"
    } catch {
      // A malformed %-escape stays as it is; it is sanitised below.
    }
  }
  const name = base.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 100);
  return name === "" ? "dataset" : name;
}
