/**
 * `data.import`: reads a CSV or JSON file (under PULSE_IMPORT_ROOT) or URL, records the
 * dataset's metadata and fans its rows out to one `data.import.chunk` child per chunk.
 * Rows travel to the children through staged KV entries, since a payload is no place for them.
 *
 * @module
 */
import {
  type DataKey,
  defineHandler,
  type HandlerContext,
  PermanentError,
  z,
} from "../../src/mod.ts";
import { datasetName, formatOf, parseRows, resolveImportPath, splitForKv } from "./_import_lib.ts";

const payload = z
  .strictObject({
    path: z.string().min(1).optional(),
    // Only http(s): `fetch` also reads file: URLs, which would bypass PULSE_IMPORT_ROOT.
    url: z.url({ protocol: /^https?$/ }).optional(),
    format: z.enum(["csv", "json"]).optional(),
    chunk_size: z.number().int().min(1).max(100_000).default(1000),
    dataset: z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/).optional(),
  })
  .refine((p) => (p.path === undefined) !== (p.url === undefined), {
    message: 'Give exactly one of "path" and "url"',
    path: ["path"],
  });

type Payload = z.infer<typeof payload>;

export default defineHandler({
  name: "data.import",
  dataNamespace: "data.import",
  description: "Imports a CSV or JSON file or URL as a dataset, one child job per chunk of rows",
  payload,
  async run(ctx) {
    const { chunk_size: chunkSize } = ctx.payload;
    const source = ctx.payload.path ?? ctx.payload.url ?? ""; // the refinement ensures one
    const format = formatOf(source, ctx.payload.format);
    const dataset = ctx.payload.dataset ?? datasetName(source);
    const { columns, rows } = parseRows(await readSource(ctx), format);
    const start = resumeFrom(ctx.lastCheckpoint);
    // A new import replaces the dataset: rows of an earlier, longer file must not linger.
    if (start === 0) await clearDataset(ctx.data, dataset);
    await ctx.data.set(["datasets", dataset, "meta"], { rows: rows.length, columns, source });

    const chunks = Math.ceil(rows.length / chunkSize);
    for (let i = start; i < chunks; i++) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const firstRow = i * chunkSize;
      const chunkRows = rows.slice(firstRow, firstRow + chunkSize);
      const parts = splitForKv(chunkRows);
      // Staged before the spawn: the child may start at once and must find every part.
      await ctx.data.setMany(
        parts.map((value, p) => ({ key: ["staging", ctx.job.id, i, p], value })),
      );
      await ctx.spawn({
        handler_name: "data.import.chunk",
        key: `chunk:${i}`,
        source: "",
        total: chunkRows.length,
        payload: {
          dataset,
          parent_job_id: ctx.job.id,
          chunk: i,
          parts: parts.length,
          first_row: firstRow,
          rows: chunkRows.length,
        },
      });
      await ctx.progress(firstRow + chunkRows.length, rows.length);
      await ctx.checkpoint({ next_chunk: i + 1 });
    }
    return { dataset, rows: rows.length, columns, first_row: rows[0] ?? null };
  },
});

/** The source's text: a file under PULSE_IMPORT_ROOT, or the body of an http(s) URL. */
async function readSource(ctx: HandlerContext<Payload>): Promise<string> {
  const { path, url = "" } = ctx.payload;
  if (path !== undefined) {
    const root = Deno.env.get("PULSE_IMPORT_ROOT") ?? Deno.cwd();
    return await Deno.readTextFile(await resolveImportPath(path, root));
  }
  await ctx.pulse.call({});
  const res = await fetch(url, { signal: ctx.signal });
  if (res.ok) return await res.text();
  await res.body?.cancel(); // free the connection; the body is not needed
  const message = `Cannot import "${url}": the server answered ${res.status}`;
  // A 5xx may pass, so it stays retryable; any other answer will not change on retry.
  if (res.status >= 500) throw Object.assign(new Error(message), { code: "network_error" });
  throw new PermanentError(message, "network_error");
}

/** The first chunk not yet spawned, from a checkpoint `{ next_chunk }` of an earlier attempt. */
function resumeFrom(checkpoint: unknown): number {
  const next = (checkpoint as { next_chunk?: unknown } | null)?.next_chunk;
  return Number.isInteger(next) && (next as number) >= 0 ? next as number : 0;
}

/** Deletes every key of a dataset, in commits of 500. */
async function clearDataset(data: HandlerContext<unknown>["data"], dataset: string) {
  let batch: DataKey[] = [];
  for await (const { key } of data.list(["datasets", dataset])) {
    batch.push(key);
    if (batch.length === 500) {
      await data.commit(batch.map((k) => ({ type: "delete" as const, key: k })));
      batch = [];
    }
  }
  if (batch.length) await data.commit(batch.map((k) => ({ type: "delete" as const, key: k })));
}
