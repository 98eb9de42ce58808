/**
 * `data.import.chunk`: a child of `data.import`. Moves one chunk's staged rows to their final
 * keys `["datasets", dataset, "rows", n]`, then deletes the staging. Every step is safe to
 * repeat, so a retried or resumed chunk ends in the same state.
 *
 * @module
 */
import { type DataKey, defineHandler, PermanentError, z } from "../../src/mod.ts";

/** KV's limit on the ops of one atomic commit. */
const MAX_OPS_PER_COMMIT = 1000;

const payload = z.strictObject({
  dataset: z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/),
  parent_job_id: z.string().min(1),
  chunk: z.number().int().min(0),
  parts: z.number().int().min(1),
  first_row: z.number().int().min(0),
  rows: z.number().int().min(0),
});

export default defineHandler({
  name: "data.import.chunk",
  dataNamespace: "data.import",
  description: "Writes one chunk of a data.import dataset from its staged rows",
  payload,
  async run(ctx) {
    const { dataset, parent_job_id: parent, chunk, parts, first_row: firstRow, rows } = ctx.payload;
    const staging = Array.from({ length: parts }, (_, p): DataKey => ["staging", parent, chunk, p]);
    const result = { dataset, chunk, rows };

    // An earlier attempt wrote every row and may have deleted the staging already.
    if ((ctx.lastCheckpoint as { written?: unknown } | null)?.written !== rows) {
      const staged = await readStaged(ctx.data.get.bind(ctx.data), staging, result);
      let written = 0;
      for (const part of staged) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        await ctx.data.setMany(part.map((value, k) => ({
          key: ["datasets", dataset, "rows", firstRow + written + k],
          value,
        })));
        written += part.length;
        await ctx.progress(written, rows);
      }
      // Before the delete: once staging is gone, only this checkpoint says the rows are in.
      await ctx.checkpoint({ written: rows });
    }
    for (let i = 0; i < staging.length; i += MAX_OPS_PER_COMMIT) {
      const batch = staging.slice(i, i + MAX_OPS_PER_COMMIT);
      await ctx.data.commit(batch.map((key) => ({ type: "delete" as const, key })));
    }
    return result;
  },
});

/**
 * Every staged part, in order, checked against the payload's row count.
 *
 * @throws {PermanentError} `validation_error` when a part is missing or the rows do not add up
 */
async function readStaged(
  get: (key: DataKey) => Promise<unknown>,
  keys: DataKey[],
  { dataset, chunk, rows }: { dataset: string; chunk: number; rows: number },
): Promise<unknown[][]> {
  const where = `chunk ${chunk} of dataset "${dataset}"`;
  const parts: unknown[][] = [];
  for (const [p, key] of keys.entries()) {
    const part = await get(key);
    if (!Array.isArray(part)) {
      throw new PermanentError(
        `Cannot import ${where}: staged part ${p} is missing`,
        "validation_error",
      );
    }
    parts.push(part);
  }
  const staged = parts.reduce((n, part) => n + part.length, 0);
  if (staged !== rows) {
    throw new PermanentError(
      `Cannot import ${where}: ${staged} rows are staged, expected ${rows}`,
      "validation_error",
    );
  }
  return parts;
}
