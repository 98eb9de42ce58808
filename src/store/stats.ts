/**
 * `store.stats.read`: QueueStats from the in/out counters (P,"stats",status,"in"|"out").
 *
 * @module
 */
import { JOB_STATUSES, type QueueStats } from "../types.ts";
import type { Keys } from "./keys.ts";

export function createStats(kv: Deno.Kv, keys: Keys) {
  async function read(): Promise<QueueStats> {
    // The 12 counters in one list batch, i.e. one snapshot: two getMany calls (≤10 keys each)
    // could read "running" before and "completed" after a commit, and count a job twice.
    const prefix = keys.stat("queued", "in").slice(0, -2);
    const values = new Map<string, bigint>();
    for await (const e of kv.list<Deno.KvU64>({ prefix }, { batchSize: 100 })) {
      values.set(`${String(e.key.at(-2))}/${String(e.key.at(-1))}`, e.value.value);
    }
    const n = (s: string, dir: string) => Number(values.get(`${s}/${dir}`) ?? 0n);
    const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, n(s, "in") - n(s, "out")]));
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    return { ...(counts as Omit<QueueStats, "total">), total };
  }
  return { read };
}
