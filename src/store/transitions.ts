/**
 * `store.transitions.apply`: status changes of several jobs in one atomic commit, each decided
 * by `lifecycle.next` and guarded by the job's versionstamp (DESIGN invariant 1). A lost race
 * re-reads and re-decides; a refused pair is reported, never written.
 *
 * @module
 */
import { type JobEvent, type JobEventType, next } from "../lifecycle/mod.ts";
import type { Job } from "../types.ts";
import { jobEntry } from "./_codec.ts";
import type { Known } from "./_known.ts";
import type { ReadyCopy } from "./_ready.ts";
import { Ledgers } from "./_ledgers.ts";
import { isTooLarge } from "../errors.ts";
import { Tally, writeChange } from "./_writes.ts";
import type { Keys } from "./keys.ts";

/** Why a change was not made. `lease_lost`: the caller's lease no longer holds the job. */
export type RefusalCode =
  | "not_found"
  | "invalid_transition"
  | "lease_lost"
  | "conflict"
  | "too_large";

export type Outcome =
  | { ok: true; job: Job; before: Job }
  | { ok: false; code: RefusalCode; message: string; job?: Job };

export interface Change {
  id: string;
  /** The event to apply to the job as read now (called again after a lost race). */
  event: (job: Job) => JobEvent;
  /** When set, the job must be running under this lease owner and attempt (worker writes). */
  lease?: { owner: string; attempt: number };
  /** Bytes this change writes by estimate (records, a result), for sizing group commits. */
  size_hint?: number;
  /** A precondition on the job as read now: a message refuses the change (code "conflict"). */
  unless?: (job: Job) => string | null;
}

const MAX_ROUNDS = 32;

export function createTransitions(kv: Deno.Kv, keys: Keys, known: Known, ready: ReadyCopy) {
  /**
   * Applies every change in one commit (max ~80 per call); returns one outcome per change.
   * A worker's change is first decided on this store's own copy of the job (see _known.ts).
   * When KV refuses the commit as too large, each change is applied alone, so one record that
   * no longer fits (`too_large`; thrown when it is the only change) holds back no other.
   */
  async function apply(changes: readonly Change[]): Promise<Outcome[]> {
    try {
      return await applyTogether(changes);
    } catch (err) {
      if (changes.length < 2 || !isTooLarge(err)) throw err;
    }
    const out: Outcome[] = [];
    for (const change of changes) {
      try {
        out.push(...await applyTogether([change]));
      } catch (err) {
        if (!isTooLarge(err)) throw err;
        out.push({
          ok: false,
          code: "too_large",
          message: `Cannot write job "${change.id}": ${(err as Error).message}`,
        });
      }
    }
    return out;
  }

  async function applyTogether(changes: readonly Change[]): Promise<Outcome[]> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const entries = await read(changes, round === 0);
      const op = kv.atomic();
      const tally = new Tally();
      const ledgers = new Ledgers(kv, keys);
      const outcomes: Outcome[] = [];
      for (const [i, change] of changes.entries()) {
        outcomes.push(await decide(change, entries[i], op, tally, ledgers));
      }
      if (!outcomes.some((o) => o.ok)) return outcomes;
      ledgers.write(op);
      const res = await tally.commit(op, keys, ready);
      if (res.ok) {
        for (const o of outcomes) if (o.ok) known.wrote(o.job, res.versionstamp);
        return outcomes;
      }
      // Lost a race: another commit changed one of these jobs. Re-read and decide again.
    }
    return changes.map((c) => ({
      ok: false as const,
      code: "conflict" as const,
      message: `Cannot change job "${c.id}": too many concurrent updates, try again`,
    }));
  }

  /** The jobs as stored: from the store's copies when `copies` (worker changes only), or read. */
  function read(changes: readonly Change[], copies: boolean) {
    return getJobsOr(
      kv,
      keys,
      changes.map((c) => c.id),
      (id, i) => copies && changes[i].lease ? known.get(id) : undefined,
    );
  }

  async function decide(
    change: Change,
    entry: Deno.KvEntryMaybe<Job>,
    op: Deno.AtomicOperation,
    tally: Tally,
    ledgers: Ledgers,
  ): Promise<Outcome> {
    const job = entry.value;
    if (!job) return { ok: false, code: "not_found", message: `Job "${change.id}" not found` };
    if (change.lease && !holds(job, change.lease)) {
      return {
        ok: false,
        code: "lease_lost",
        job,
        message:
          `Job "${job.id}" is no longer held by "${change.lease.owner}": status is "${job.status}"`,
      };
    }
    const skip = change.unless?.(job);
    if (skip) return { ok: false, code: "conflict", job, message: skip };
    const event = change.event(job);
    const d = next(job, event);
    if (!d.ok) {
      return {
        ok: false,
        code: "invalid_transition",
        job,
        message: `Cannot ${event.type} job "${job.id}": status is "${job.status}"`,
      };
    }
    op.check(entry);
    const becomesActive = d.job.source && isInactive(job) && !isInactive(d.job);
    if (becomesActive) {
      const holder = await kv.get<string>(keys.active(d.job.handler_name, d.job.source));
      if (holder.value && holder.value !== job.id) {
        return {
          ok: false,
          code: "conflict",
          job,
          message:
            `Cannot ${event.type} job "${job.id}": job "${holder.value}" with source "${job.source}" is active`,
        };
      }
      op.check(holder);
    }
    const after = await releaseReservation(job, d.job, ledgers, event.type);
    return { ok: true, job: writeChange(op, keys, job, after, d.entry, tally), before: job };
  }

  return { apply };
}

const isInactive = (job: Job) => !["queued", "running", "paused"].includes(job.status);

/**
 * A job that stops running gives back the money it still holds (DESIGN invariant 4: the
 * reservation is settled to actuals, the rest released). Money admitted to its calls but not
 * recorded yet may already be spent (a cancelled handler can still report it), so it counts as
 * spent now and is kept as `assumed_micros`: nothing else can be admitted on it, and a later
 * `recordCost` replaces it instead of adding to it.
 */
export async function releaseReservation(
  before: Job,
  after: Job,
  ledgers: Ledgers,
  event: JobEventType,
): Promise<Job> {
  const r = before.reservation;
  if (before.status !== "running" || after.status === "running" || !r) return after;
  // A handler that completed or threw has had its cost records awaited: settle to actuals.
  // One taken away (cancel, pause, expiry, stop) may still report what it spent.
  const ended = event === "complete" || event === "fail";
  const unrecorded = ended ? 0 : Math.min(r.admitted_micros, r.reserved_micros);
  if (r.reserved_micros > 0) {
    await ledgers.addBoth(r, { reserved: -r.reserved_micros, spent: unrecorded });
  }
  return {
    ...after,
    reservation: {
      ...r,
      reserved_micros: 0,
      admitted_micros: 0,
      assumed_micros: (r.assumed_micros ?? 0) + unrecorded,
    },
  };
}

/** True when `job` is running under exactly this lease owner and attempt. */
export function holds(job: Job, lease: { owner: string; attempt: number }): boolean {
  return job.status === "running" && job.lease?.owner === lease.owner &&
    job.attempt === lease.attempt;
}

/** Reads job entries in getMany calls of ≤10 keys (KV's limit), in parallel, in order. */
export async function getJobs(kv: Deno.Kv, keys: Keys, ids: readonly string[]) {
  const groups: Promise<Deno.KvEntryMaybe<unknown>[]>[] = [];
  for (let i = 0; i < ids.length; i += 10) {
    groups.push(kv.getMany(ids.slice(i, i + 10).map(keys.job)));
  }
  return (await Promise.all(groups)).flat().map(jobEntry);
}

/**
 * Job entries in order: `copy(id, i)` when it has one (a versionstamped copy, checked by the
 * caller's commit), the rest read in one round trip.
 */
export async function getJobsOr(
  kv: Deno.Kv,
  keys: Keys,
  ids: readonly string[],
  copy: (id: string, i: number) => Deno.KvEntry<Job> | undefined,
): Promise<Deno.KvEntryMaybe<Job>[]> {
  const entries: (Deno.KvEntryMaybe<Job> | undefined)[] = ids.map(copy);
  const fresh = await getJobs(kv, keys, ids.filter((_, i) => !entries[i]));
  return entries.map((e) => e ?? fresh.shift()!);
}

/** Reads one job entry (decoded). */
export async function getJob(kv: Deno.Kv, keys: Keys, id: string) {
  return jobEntry(await kv.get(keys.job(id)));
}
