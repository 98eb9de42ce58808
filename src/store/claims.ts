/**
 * `store.claims`: the dispatcher's batched claim of ready jobs, and the lease sweep's reads.
 *
 * `ready` lists P,"ready" (run_at ≤ now); `take` decides on the records the listing carried, or
 * reads P,"job",id, and on P,"gov","limits" and P,"gov","queue_paused" (or on copies of them, see
 * `take`); one atomic op checks every claimed job's versionstamp, the queue flag and the limits,
 * and writes job + by_status + ready (deleted) + events + stats for all of them (DESIGN invariant
 * 2: claim once). A job with a cost estimate under a budget limit reserves it against today's and
 * this month's ledgers (P,"gov","day"/"month", checked) in the same op, or is paused
 * `budget_exceeded` (failed when `pause_on_budget` is off) instead of claimed.
 *
 * A ready key's value is a copy of the job's record, written in the same commit as the record,
 * so both carry that commit's versionstamp. A claim decides on the copy and checks the record
 * (P,"job",id) against the copy's versionstamp: a record written since, by any path, fails the
 * check, and the job is decided again on a read. Listing the ready index so reads the jobs too,
 * instead of a list and then a read of every job (which cost ~20 % of throughput).
 *
 * @module
 */
import { iso } from "../clock.ts";
import { type JobEvent, next } from "../lifecycle/mod.ts";
import { fits, limitMicros, periodOf, toMicros } from "../pulse/mod.ts";
import type { Job, Limits } from "../types.ts";
import type { Known } from "./_known.ts";
import { decodeJob, recordBytes } from "./_codec.ts";
import type { ReadyCopy, ReadyKey } from "./_ready.ts";
import { Ledgers } from "./_ledgers.ts";
import { isTooLarge } from "../errors.ts";
import { COMMIT_BYTES, Tally, writeChange } from "./_writes.ts";
import type { Keys } from "./keys.ts";
import { getJobs, getJobsOr } from "./transitions.ts";

/**
 * Claims per commit: ≤ 7 mutations and 1 check each, plus the queue flag, the limits and ≤ 2
 * ledger checks, stays under KV's 1000 mutations / 100 checks per commit.
 */
export const MAX_CLAIMS_PER_COMMIT = 90;

export interface ClaimOptions {
  owner: string;
  max: number;
  lease_ms: number;
}

export function createClaims(
  kv: Deno.Kv,
  keys: Keys,
  now: () => number,
  seed: Limits,
  known: Known,
  copy: ReadyCopy,
) {
  /**
   * Jobs whose record KV refused to take back (written by an earlier version, now over 64 KiB):
   * skipped by every claim, so they hold back no other job. Bounded; forgotten on restart.
   */
  const unwritable = new Set<string>();

  /**
   * Ids of up to `max` ready jobs due by now, oldest run_at first, after the ready key `after`
   * when given (a claim still in flight listed up to it), and the last ready key listed. Taken
   * from the store's copy of the ready index when it can tell (_ready.ts), else listed; a
   * listing from the start of the index (no `after`) renews the copy. `rows`: the records a
   * listing carried, as entries of P,"job",id (for `take`); a ready key written before records
   * were copied into it holds only the id, and its job is read.
   */
  async function ready(max: number, after?: ReadyKey) {
    const n = Math.min(max, MAX_CLAIMS_PER_COMMIT);
    const t = now();
    const fromCopy = copy.due(t, n, after)?.filter((k) => !unwritable.has(k[2]));
    if (fromCopy) {
      return { ids: fromCopy.map((k) => k[2]), last: fromCopy.at(-1) ?? null, rows: undefined };
    }
    const token = after ? null : copy.listing();
    // One key past the due ones tells the copy how far it reaches (and when the next is due).
    const limit = token ? n + 1 : n;
    const selector = token ? { prefix: keys.ready() } : {
      start: after ? [...keys.ready(), ...after, "\u0000"] : keys.ready(),
      end: keys.readyUntil(t + 1),
    };
    const listed: ReadyKey[] = [];
    const rows = new Map<string, Deno.KvEntry<Job>>();
    for await (const e of kv.list<unknown>(selector, { limit, batchSize: limit })) {
      const key = e.key.slice(keys.ready().length) as unknown as ReadyKey;
      listed.push(key);
      if (typeof e.value !== "string" && key[0] <= t) {
        const id = key[2];
        rows.set(id, {
          key: keys.job(id),
          value: decodeJob(id, e.value),
          versionstamp: e.versionstamp,
        });
      }
    }
    copy.listed(token, listed, listed.length < limit);
    const due = listed.filter((k) => k[0] <= t && !unwritable.has(k[2])).slice(0, n);
    return { ids: due.map((k) => k[2]), last: due.at(-1) ?? null, rows };
  }

  /** The queue flag and limits as the last claim read them (a paused queue is never reused). */
  let flags: [Deno.KvEntryMaybe<boolean>, Deno.KvEntryMaybe<Limits>] | null = null;

  /**
   * Claims the listed jobs that are still queued, in one commit (≤ MAX_CLAIMS_PER_COMMIT): each
   * whose estimate fits is claimed; one that does not is paused `budget_exceeded` (failed when
   * `pause_on_budget` is off). A lost race re-reads the same jobs and decides again. `rows`:
   * the records `ready` listed with the ids. A repeated id counts once, and a job not due yet
   * (a listing gone stale) is skipped. `raced`: another dispatcher took some first; `changed`:
   * how many jobs the commit changed; `paused`: the queue is paused (nothing was decided).
   */
  async function take(
    ids: readonly string[],
    o: Omit<ClaimOptions, "max">,
    rows?: ReadonlyMap<string, Deno.KvEntry<Job>>,
  ) {
    let raced = false;
    for (let round = 0; round < 8; round++) {
      const t = now();
      // The first round decides on this store's own copies of jobs it enqueued (_known.ts) and
      // on the flags the last claim read; the rest is read in one round trip. Both flags are
      // checked by the commit, so a stale copy fails it and the next round reads them again.
      const listed = [...new Set(ids)].filter((id) => !unwritable.has(id))
        .slice(0, MAX_CLAIMS_PER_COMMIT);
      if (!listed.length) return { claimed: [], changed: 0, raced, paused: false };
      const cached = round === 0 && flags && !flags[0].value ? flags : null;
      const [[paused, stored], entries] = await Promise.all([
        cached ?? kv.getMany<[boolean, Limits]>([keys.queuePaused(), keys.limits()]),
        getJobsOr(
          kv,
          keys,
          listed,
          (id) => round === 0 ? rows?.get(id) ?? known.get(id) : undefined,
        ),
      ]);
      flags = [paused, stored];
      if (paused.value) return { claimed: [], changed: 0, raced, paused: true };
      const lim = stored.value ?? seed;
      const op = kv.atomic().check(paused, stored);
      const tally = new Tally();
      const ledgers = new Ledgers(kv, keys);
      const claimed: Job[] = [];
      let changed = 0;
      let bytes = 0;
      const lease = { owner: o.owner, expires_at: iso(t + o.lease_ms) };
      for (const entry of entries) {
        if (entry.value?.status !== "queued") {
          raced ||= round > 0 || entry.value?.status === "running";
          copy.drop(); // the ready index changed without this store: list it again
          continue;
        }
        // Not due yet: only a listing gone stale offers it (queued again since, to run later).
        if (Date.parse(entry.value.run_at) > t) {
          copy.drop();
          continue;
        }
        // Jobs with large payloads: the rest wait for the next claim (KV refuses > 800 KiB).
        bytes += recordBytes(entry.value);
        if (changed && bytes > COMMIT_BYTES) break;
        const admitted = await admit(entry.value, lim, t, ledgers);
        const event: JobEvent = admitted
          ? { type: "claim", now: t, lease }
          : refusal(entry.value, lim, t);
        const d = next(entry.value, event);
        if (!d.ok) continue;
        // A run holds only what its own claim reserved: an earlier run's (released) reservation
        // would charge this run's calls to the period of that earlier run.
        const after = !admitted
          ? d.job
          : { ...d.job, reservation: admitted === true ? null : admitted };
        op.check(entry);
        const stored = writeChange(op, keys, entry.value, after, d.entry, tally);
        changed++;
        if (stored.status === "running") claimed.push(stored);
      }
      if (!changed) return { claimed, changed, raced, paused: false };
      ledgers.write(op);
      const res = await tally.commit(op, keys, copy).catch((err) => {
        if (isTooLarge(err)) return err;
        throw err;
      });
      if (res instanceof TypeError) return await takeEach(listed, o, rows, res);
      if (res.ok) {
        for (const job of claimed) known.wrote(job, res.versionstamp);
        return { claimed, changed, raced, paused: false };
      }
      raced = true; // another commit changed one of these jobs (or a ledger): decide again
    }
    return { claimed: [], changed: 0, raced, paused: false };
  }

  /** After KV refused a claim as too large: each job alone, setting aside the one it refuses. */
  async function takeEach(
    ids: readonly string[],
    o: Omit<ClaimOptions, "max">,
    rows: ReadonlyMap<string, Deno.KvEntry<Job>> | undefined,
    err: TypeError,
  ) {
    if (ids.length === 1) {
      if (unwritable.size >= 1000) unwritable.clear();
      unwritable.add(ids[0]);
      console.error(`Job "${ids[0]}" cannot be claimed, its record no longer fits:`, err.message);
      return { claimed: [], changed: 0, raced: false, paused: false };
    }
    const out = { claimed: [] as Job[], changed: 0, raced: false, paused: false };
    for (const id of ids) {
      const r = await take([id], o, rows);
      out.claimed.push(...r.claimed);
      out.changed += r.changed;
      out.raced ||= r.raced;
    }
    return out;
  }

  /** Claims up to `max` ready jobs (run_at ≤ now), oldest run_at first, in one commit. */
  async function claimNext(o: ClaimOptions): Promise<Job[]> {
    if (o.max <= 0) return [];
    for (let round = 0; round < 8; round++) {
      const { ids, rows } = await ready(o.max);
      if (!ids.length) return [];
      const { claimed, changed, raced } = await take(ids, o, rows);
      if (claimed.length) return claimed;
      // Only refusals (paused for budget), or others took them first: look again.
      if (!changed && !raced) return [];
    }
    return [];
  }

  /**
   * Reserves a job's estimate when a budget limit is set: true (nothing to reserve), the
   * reservation, or null when it does not fit today's or this month's room.
   */
  async function admit(job: Job, lim: Limits, t: number, ledgers: Ledgers) {
    const max = limitMicros(lim);
    const estimate = toMicros(job.cost_estimate);
    if (estimate === 0 || (max.day === null && max.month === null)) return true;
    const period = periodOf(t, lim.time_zone);
    const periods = [
      { ledger: await ledgers.get("day", period.day), limit: max.day },
      { ledger: await ledgers.get("month", period.month), limit: max.month },
    ];
    if (!fits(estimate, periods)) return null;
    await ledgers.addBoth(period, { reserved: estimate });
    return { ...period, reserved_micros: estimate, admitted_micros: 0 };
  }

  /** Epoch ms of the earliest queued job's run_at, or null when none is queued. */
  async function nextRunAt(): Promise<number | null> {
    const known = copy.earliest();
    if (known !== undefined) return known;
    for await (const e of kv.list({ prefix: keys.ready() }, { limit: 1 })) {
      return e.key[keys.ready().length] as number;
    }
    return null;
  }

  /**
   * Ids of running jobs whose lease expired at or before `at`, oldest expiry first. Reads every
   * running job (there is no lease index: see keys.ts), at most `scan` of them per call.
   */
  async function expired(at: number, scan: number): Promise<string[]> {
    const ids: string[] = [];
    const iter = kv.list({ prefix: keys.byStatus("running") }, { limit: scan, batchSize: 500 });
    for await (const e of iter) ids.push(e.key[e.key.length - 1] as string);
    const expiry = (j: Job) => Date.parse(j.lease?.expires_at ?? "") || 0;
    return (await getJobs(kv, keys, ids))
      .flatMap((e) => e.value?.status === "running" && expiry(e.value) <= at ? [e.value] : [])
      .sort((a, b) => expiry(a) - expiry(b))
      .map((j) => j.id);
  }

  /** Reports an observation of the wake counter (the pool's watch) to the ready copy. */
  const observe = (entry: Deno.KvEntryMaybe<Deno.KvU64>) => copy.observe(entry);

  return { next: claimNext, ready, take, nextRunAt, expired, observe };
}

/** What happens to a job whose estimate does not fit: paused, or failed when so configured. */
function refusal(job: Job, lim: Limits, t: number): JobEvent {
  const message = `Budget exceeded: estimate $${job.cost_estimate} does not fit the remaining ` +
    `daily/monthly budget`;
  if (lim.pause_on_budget) {
    return { type: "pause", now: t, pause_reason: "budget_exceeded", reason: message };
  }
  return {
    type: "fail",
    now: t,
    backoff_ms: 0,
    error_context: {
      stage: "admission",
      code: "unknown",
      message,
      retryable: false,
      recoverable: false,
    },
  };
}
