/**
 * The group commit of outcomes: workers hand their job's outcome to `settle`, which commits it
 * with the other outcomes submitted meanwhile, in groups that fit one KV commit.
 *
 * @module
 */
import type { Change, Outcome, Store } from "../store/mod.ts";
import { createBatcher } from "./batcher.ts";

/** Outcomes per group commit: ≤ 8 mutations and 1 check each (+ ≤ 4 ledger checks), under KV's 1000 / 100. */
export const MAX_SETTLE_BATCH = 90;
const MAX_SETTLE_BYTES = 480 * 1024;

/** Returns `settle`: commits one outcome (group-committed with other workers' outcomes). */
export function createSettle(store: Store) {
  const outcomes = createBatcher(settleMany, MAX_SETTLE_BATCH);

  /**
   * Commits outcomes in groups that stay well under KV's 800 KiB per commit; a group that
   * fails as a whole (a value over 64 KiB) is retried one by one, so only that job sees it.
   */
  async function settleMany(changes: Change[]): Promise<(Outcome | Error)[]> {
    const out: (Outcome | Error)[] = [];
    let group: Change[] = [];
    let bytes = 0;
    const flush = async () => {
      if (!group.length) return;
      try {
        // A record KV refuses is reported as the error a lone commit of it throws (execute.ts).
        const outcomes = await store.transitions.apply(group);
        out.push(
          ...outcomes.map((o) => !o.ok && o.code === "too_large" ? new TypeError(o.message) : o),
        );
      } catch (err) {
        if (group.length === 1) out.push(err instanceof Error ? err : new Error(String(err)));
        else for (const c of group) out.push(...await settleMany([c]));
      }
      group = [];
      bytes = 0;
    };
    for (const c of changes) {
      const size = (c.size_hint ?? 0) + 4096;
      if (bytes + size > MAX_SETTLE_BYTES) await flush();
      group.push(c);
      bytes += size;
    }
    await flush();
    return out;
  }

  return async (change: Change): Promise<Outcome> => {
    const r = await outcomes.submit(change);
    if (r instanceof Error) throw r;
    return r;
  };
}
