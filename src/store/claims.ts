/**
 * `store.claims`: the dispatcher's batched claim of ready jobs, and the lease sweep's reads.
 *
 * `next` keys: reads P,"ready" (run_at ≤ now) and P,"job",id; one atomic op checks every
 * claimed job's versionstamp and writes job + by_status + ready (deleted) + leases + events +
 * stats for all of them (DESIGN invariant 2: claim once).
 *
 * @module
 */
import { iso } from "../clock.ts";
import { next } from "../lifecycle/mod.ts";
import type { Job } from "../types.ts";
import { Tally, writeChange } from "./_writes.ts";
import type { Keys } from "./keys.ts";
import { getJobs } from "./transitions.ts";

/** Claims per commit: 9 mutations and 1 check each stays under KV's 1000 / 100 limits. */
export const MAX_CLAIMS_PER_COMMIT = 50;

export interface ClaimOptions {
  owner: string;
  max: number;
  lease_ms: number;
}

export function createClaims(kv: Deno.Kv, keys: Keys, now: () => number) {
  /** Claims up to `max` ready jobs (run_at ≤ now), oldest run_at first, in one commit. */
  async function claimNext(o: ClaimOptions): Promise<Job[]> {
    const max = Math.min(o.max, MAX_CLAIMS_PER_COMMIT);
    if (max <= 0) return [];
    for (let round = 0; round < 8; round++) {
      const t = now();
      const ids: string[] = [];
      const iter = kv.list<string>({ start: keys.ready(), end: keys.readyUntil(t + 1) }, {
        limit: max,
      });
      for await (const e of iter) ids.push(e.value);
      if (!ids.length) return [];
      const entries = await getJobs(kv, keys, ids);
      const op = kv.atomic();
      const tally = new Tally();
      const claimed: Job[] = [];
      for (const entry of entries) {
        if (!entry.value) continue;
        const lease = { owner: o.owner, expires_at: iso(t + o.lease_ms) };
        const d = next(entry.value, { type: "claim", now: t, lease });
        if (!d.ok) continue;
        op.check(entry);
        writeChange(op, keys, entry.value, d.job, d.entry, tally);
        claimed.push(d.job);
      }
      if (!claimed.length) return [];
      tally.apply(op, keys);
      if ((await op.commit()).ok) return claimed;
      // Another dispatcher claimed one of these first: read the ready index again.
    }
    return [];
  }

  /** Epoch ms of the earliest queued job's run_at, or null when none is queued. */
  async function nextRunAt(): Promise<number | null> {
    for await (const e of kv.list({ prefix: keys.ready() }, { limit: 1 })) {
      return e.key[keys.ready().length] as number;
    }
    return null;
  }

  /** Ids of running jobs whose lease expired at or before `at`, oldest expiry first. */
  async function expired(at: number, limit: number): Promise<string[]> {
    const ids: string[] = [];
    const iter = kv.list({ start: keys.lease(), end: keys.leasesUntil(at + 1) }, { limit });
    for await (const e of iter) ids.push(e.key[e.key.length - 1] as string);
    return ids;
  }

  return { next: claimNext, nextRunAt, expired };
}
