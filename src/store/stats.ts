/**
 * `store.stats.read`: QueueStats from the in/out counters (P,"stats",status,"in"|"out").
 *
 * @module
 */
import { JOB_STATUSES, type QueueStats } from "../types.ts";
import type { Keys } from "./keys.ts";

export function createStats(kv: Deno.Kv, keys: Keys) {
  async function read(): Promise<QueueStats> {
    const statKeys = JOB_STATUSES.flatMap((s) => [keys.stat(s, "in"), keys.stat(s, "out")]);
    const entries = [
      ...await kv.getMany<Deno.KvU64[]>(statKeys.slice(0, 6)),
      ...await kv.getMany<Deno.KvU64[]>(statKeys.slice(6)),
    ];
    const n = (i: number) => Number(entries[i].value?.value ?? 0n);
    const counts = Object.fromEntries(JOB_STATUSES.map((s, i) => [s, n(2 * i) - n(2 * i + 1)]));
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    return { ...(counts as Omit<QueueStats, "total">), total };
  }
  return { read };
}
