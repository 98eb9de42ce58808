/**
 * `store.governor`: limits, the rate window, budget ledgers and the whole-queue pause flag.
 *
 * `admitCall` keys: checks P,"job",id (lease), P,"gov","rate"[,handler] (when limited) and the
 * job's P,"gov","day"/"month" ledgers (when it must reserve more); writes them, or on refusal
 * pauses the job (rate_limit / budget_exceeded) through the lifecycle in the same commit.
 * `recordCost` keys: P,"job",id and its ledgers (no lease needed: spent money is always recorded).
 *
 * @module
 */
import { iso } from "../clock.ts";
import { next } from "../lifecycle/mod.ts";
import {
  admitCall as decideRate,
  fits,
  limitMicros,
  periodOf,
  type Snapshot,
} from "../pulse/mod.ts";
import { EMPTY_LEDGER, type Ledger } from "../pulse/mod.ts";
import type { Job, Limits, PauseReason } from "../types.ts";
import { encodeJob } from "./_codec.ts";
import type { Known } from "./_known.ts";
import { Ledgers } from "./_ledgers.ts";
import { Tally, writeChange } from "./_writes.ts";
import type { Keys } from "./keys.ts";
import { getJob, holds, releaseReservation } from "./transitions.ts";

export type CallOutcome =
  | { ok: true }
  | { ok: false; reason: PauseReason | "lease_lost"; retry_at?: number };

const ROUNDS = 64;

export function createGovernor(
  kv: Deno.Kv,
  keys: Keys,
  now: () => number,
  seed: Limits,
  known: Known,
) {
  async function limits(): Promise<Limits> {
    return (await kv.get<Limits>(keys.limits())).value ?? seed;
  }

  /** Applies a partial change to the stored limits (env only seeds them) and wakes the pools. */
  async function setLimits(patch: Partial<Limits>): Promise<Limits> {
    for (let round = 0; round < ROUNDS; round++) {
      const entry = await kv.get<Limits>(keys.limits());
      const value: Limits = { ...(entry.value ?? seed), ...patch };
      const res = await kv.atomic().check(entry).set(keys.limits(), value).sum(keys.wake(), 1n)
        .commit();
      if (res.ok) return value;
    }
    throw new Error("Cannot change limits: too many concurrent updates, try again");
  }

  async function setQueuePaused(paused: boolean) {
    await kv.atomic().set(keys.queuePaused(), paused).sum(keys.wake(), 1n).commit();
  }

  /** One read of every governor key the read models need (a single getMany). */
  async function snapshot(): Promise<Snapshot> {
    const t = now();
    const lim = await limits();
    const period = periodOf(t, lim.time_zone);
    const [rate, day, month, paused] = await kv.getMany<[number[], Ledger, Ledger, boolean]>([
      keys.rate(),
      keys.ledger("day", period.day),
      keys.ledger("month", period.month),
      keys.queuePaused(),
    ]);
    return {
      now: t,
      limits: lim,
      window: rate.value ?? [],
      day: { key: period.day, ledger: day.value ?? EMPTY_LEDGER },
      month: { key: period.month, ledger: month.value ?? EMPTY_LEDGER },
      queue_paused: paused.value ?? false,
    };
  }

  /**
   * Admits one external call of `cost` µ$ for a running job: under the global (and the
   * handler's) rate window, drawing on the job's reservation or reserving the shortfall.
   * A refusal pauses the job in the same commit and releases what it held.
   */
  async function admitCall(id: string, lease: { owner: string; attempt: number }, cost: number) {
    known.forget(id); // the job record changes here: its outcome must read it again
    for (let round = 0; round < ROUNDS; round++) {
      const t = now();
      const [entry, lim] = [await getJob(kv, keys, id), await limits()];
      const job = entry.value;
      if (!job || !holds(job, lease)) return { ok: false, reason: "lease_lost" } as CallOutcome;
      const op = kv.atomic().check(entry);
      const ledgers = new Ledgers(kv, keys);
      const refusal = await decide(job, lim, t, cost, op, ledgers);
      if (refusal) {
        // With pause_on_budget off, a call the budget cannot take fails the job, as a claim does.
        const failing = refusal.reason === "budget_exceeded" && !lim.pause_on_budget;
        const paused = next(
          job,
          failing
            ? {
              type: "fail",
              now: t,
              backoff_ms: 0,
              error_context: {
                stage: "call",
                code: "unknown",
                message: `Budget exceeded: a call of $${
                  cost / 1e6
                } does not fit the remaining budget`,
                retryable: false,
                recoverable: false,
              },
            }
            : { type: "pause", now: t, pause_reason: refusal.reason },
        );
        if (!paused.ok) return { ok: false, reason: "lease_lost" } as CallOutcome;
        const ledgersOut = new Ledgers(kv, keys);
        let after = await releaseReservation(job, paused.job, ledgersOut, "pause");
        if (refusal.reason === "budget_exceeded" && !failing) {
          // Self-resume must wait until this call fits, or the job would loop: resume, claim,
          // refused again.
          const r = after.reservation ??
            { ...periodOf(t, lim.time_zone), reserved_micros: 0, admitted_micros: 0 };
          after = { ...after, reservation: { ...r, needed_micros: cost } };
        }
        const tally = new Tally();
        const pauseOp = kv.atomic().check(entry);
        writeChange(pauseOp, keys, job, after, paused.entry, tally);
        ledgersOut.write(pauseOp);
        tally.apply(pauseOp, keys);
        if ((await pauseOp.commit()).ok) return { ok: false, ...refusal } as CallOutcome;
        continue;
      }
      ledgers.write(op);
      if ((await op.commit()).ok) return { ok: true } as CallOutcome;
    }
    throw new Error(`Cannot admit a call for job "${id}": too many concurrent updates`);
  }

  /** Adds the admission's writes to `op`, or returns why the call is refused. */
  async function decide(
    job: Job,
    lim: Limits,
    t: number,
    cost: number,
    op: Deno.AtomicOperation,
    ledgers: Ledgers,
  ) {
    for (const [key, limit] of rateLimitsOf(job, lim)) {
      const entry = await kv.get<number[]>(key);
      const d = decideRate(entry.value ?? [], t, limit);
      if (!d.ok) return { reason: "rate_limit" as const, retry_at: d.retry_at };
      op.check(entry).set(key, d.window);
    }
    const r = job.reservation ??
      { ...periodOf(t, lim.time_zone), reserved_micros: 0, admitted_micros: 0 };
    const shortfall = Math.max(0, r.admitted_micros + cost - r.reserved_micros);
    if (shortfall > 0) {
      const max = limitMicros(lim);
      const periods = [
        { ledger: await ledgers.get("day", r.day), limit: max.day },
        { ledger: await ledgers.get("month", r.month), limit: max.month },
      ];
      if (!fits(shortfall, periods)) return { reason: "budget_exceeded" as const };
      await ledgers.addBoth(r, { reserved: shortfall });
    }
    const reservation = {
      ...r,
      reserved_micros: r.reserved_micros + shortfall,
      admitted_micros: r.admitted_micros + cost,
    };
    if (cost > 0 || job.reservation) {
      op.set(keys.job(job.id), encodeJob({ ...job, reservation, updated_at: iso(t) }));
    }
    return null;
  }

  /** Records money actually spent by a job (always: spent money cannot be refused). */
  async function recordCost(id: string, micros: number): Promise<Job | null> {
    known.forget(id); // the job record changes here: its outcome must read it again
    for (let round = 0; round < ROUNDS; round++) {
      const t = now();
      const entry = await getJob(kv, keys, id);
      const job = entry.value;
      if (!job) return null;
      const lim = job.reservation ? null : await limits();
      const r = job.reservation ??
        { ...periodOf(t, lim!.time_zone), reserved_micros: 0, admitted_micros: 0 };
      // Spend already assumed when the run stopped is replaced, not added to.
      const covered = Math.min(micros, r.assumed_micros ?? 0);
      const fresh = micros - covered;
      const converted = Math.min(fresh, r.reserved_micros);
      const ledgers = new Ledgers(kv, keys);
      if (fresh > 0) await ledgers.addBoth(r, { spent: fresh, reserved: -converted });
      const after: Job = {
        ...job,
        cost_actual: (Math.round(job.cost_actual * 1e6) + micros) / 1e6,
        reservation: {
          ...r,
          reserved_micros: r.reserved_micros - converted,
          admitted_micros: Math.max(0, r.admitted_micros - fresh),
          ...(covered ? { assumed_micros: (r.assumed_micros ?? 0) - covered } : {}),
        },
        updated_at: iso(t),
      };
      const op = kv.atomic().check(entry).set(keys.job(id), encodeJob(after));
      ledgers.write(op);
      if ((await op.commit()).ok) return after;
    }
    throw new Error(`Cannot record cost for job "${id}": too many concurrent updates`);
  }

  /** The instants of a handler's own rate window (see `handler_limits`). */
  async function handlerWindow(handler: string): Promise<number[]> {
    return (await kv.get<number[]>(keys.rate(handler))).value ?? [];
  }

  /** Jobs paused for budget or rate, oldest first. */
  async function waiting(limit: number): Promise<{ id: string; reason: PauseReason }[]> {
    const out: { id: string; reason: PauseReason }[] = [];
    for await (const e of kv.list<PauseReason>({ prefix: keys.waiting() }, { limit })) {
      out.push({ id: e.key[e.key.length - 1] as string, reason: e.value });
    }
    return out;
  }

  return {
    limits,
    setLimits,
    setQueuePaused,
    snapshot,
    admitCall,
    recordCost,
    waiting,
    handlerWindow,
  };

  function rateLimitsOf(job: Job, lim: Limits): [Deno.KvKey, number][] {
    const out: [Deno.KvKey, number][] = [];
    if (lim.max_calls_per_minute !== null) out.push([keys.rate(), lim.max_calls_per_minute]);
    const own = lim.handler_limits[job.handler_name]?.max_calls_per_minute;
    if (own != null) out.push([keys.rate(job.handler_name), own]);
    return out;
  }
}

export type Governor = ReturnType<typeof createGovernor>;
