/**
 * Leases: a heartbeat renews the leases of this pool's jobs; a sweep expires lost leases (any
 * owner); a KV watch wakes the loops for other instances' work and aborts jobs taken away.
 *
 * @module
 */
import { iso } from "../clock.ts";
import { backoffMs } from "../lifecycle/mod.ts";
import type { Job } from "../types.ts";
import { leaseOf, type PoolContext } from "./context.ts";

/**
 * Pure: the delay of the `i`-th of `n` recovered jobs: after its backoff, spread evenly over
 * the rest of the start phase (no spread once the phase is over).
 */
export function spread(backoff: number, phaseLeft: number, i: number, n: number): number {
  if (phaseLeft <= backoff) return backoff;
  return backoff + Math.floor(((phaseLeft - backoff) * i) / n);
}

/** Expired leases handled per sweep; more wait for the next sweep (a few seconds later). */
const SWEEP_MAX = 10_000;

export interface RecoveryOptions {
  /** After a start, jobs recovered from expired leases are spread over this long (ms). */
  graceful_start_phase_ms?: number;
  /** When the pool (last) started (epoch ms). */
  startedAt: () => number;
}

/** Returns the heartbeat, sweep and watch loops, and `sweepOnce` / `checkTaken` for callers. */
export function createRecovery(ctx: PoolContext, opts: RecoveryOptions) {
  const { store, clock, random, stopping, running, buffer, wakeup, governWakeup } = ctx;

  const renew = (job: Job) =>
    store.jobs.touch(job.id, leaseOf(ctx, job), () => ({
      lease: { owner: ctx.owner, expires_at: iso(clock.now() + ctx.lease_ms) },
    }));

  /**
   * Takes a claimed-ahead job out of the buffer, if it is still there: the dispatcher may have
   * handed it to a worker while the caller awaited (without the check, splice(-1) would drop the
   * last job of the buffer, which would then wait a whole lease for the sweep).
   */
  const unbuffer = (job: Job) => {
    const at = buffer.indexOf(job);
    if (at >= 0) buffer.splice(at, 1);
  };

  /** Renews the lease of every running job; a job whose lease is gone is abandoned. */
  async function heartbeat() {
    const every = Math.max(1, Math.floor(ctx.lease_ms / 3));
    while (!stopping.signal.aborted) {
      await clock.sleep(every, stopping.signal);
      // One job's failure (KV down, or a record it refuses) must not stop the others' renewal.
      const beat = async (job: Job, lost: () => void) => {
        try {
          if (!(await renew(job))) lost();
        } catch (err) {
          console.error(`Lease renewal of job "${job.id}" failed (retried next beat):`, err);
        }
      };
      for (const r of [...running.values()]) await beat(r.job, () => r.control.abort("taken"));
      for (const job of [...buffer]) await beat(job, () => unbuffer(job));
    }
  }

  /** Expires every running job whose lease ran out (any owner), page by page. */
  async function sweep() {
    const every = Math.max(1, Math.min(5000, Math.floor(ctx.lease_ms / 2)));
    while (!stopping.signal.aborted) {
      await sweepOnce().catch((err) => console.error("Lease sweep failed:", err));
      await clock.sleep(every, stopping.signal);
    }
  }

  /**
   * Expires every lease that ran out. Within the graceful start phase, the recovered jobs of one
   * sweep are spread evenly over what is left of it (their run_at), so a restart after a crash
   * does not release them all at once; fresh work (run_at = now) goes first.
   */
  async function sweepOnce(): Promise<number> {
    const now = clock.now();
    const phaseLeft = Math.max(0, opts.startedAt() + (opts.graceful_start_phase_ms ?? 0) - now);
    const ids = await store.claims.expired(now, SWEEP_MAX);
    let expired = 0;
    for (let at = 0; at < ids.length; at += 50) {
      const page = ids.slice(at, at + 50);
      const outcomes = await store.transitions.apply(page.map((id, i) => ({
        id,
        unless: (j: Job) =>
          j.lease && Date.parse(j.lease.expires_at) > now ? `Lease of "${id}" was renewed` : null,
        event: (j: Job) => ({
          type: "expire" as const,
          now,
          backoff_ms: spread(backoffMs(j.retry_count + 1, random()), phaseLeft, at + i, ids.length),
          reason: `Lease of "${j.lease?.owner}" expired at ${j.lease?.expires_at}`,
        }),
      })));
      expired += outcomes.filter((x) => x.ok).length;
    }
    return expired;
  }

  /** Wakes on any instance's enqueue; aborts local jobs another actor took away. */
  async function watch() {
    const stream = store.watchSignals();
    const reader = stream.getReader();
    stopping.signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
    let lastControl: string | null = null;
    let lastWake: string | null = null;
    while (!stopping.signal.aborted) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done || !value) break;
      store.claims.observe(value[0] as Deno.KvEntryMaybe<Deno.KvU64>);
      if (value[0].versionstamp !== lastWake) ctx.work.seen++;
      lastWake = value[0].versionstamp;
      wakeup.notify();
      governWakeup.notify();
      const control = value[1].versionstamp;
      if (control !== lastControl) {
        lastControl = control;
        await checkTaken();
      }
    }
  }

  /**
   * Jobs this process just took from the pool (a cancel or pause through its API, committed):
   * a claimed-ahead one leaves the buffer at once, before a worker freed meanwhile could start
   * it, and a running one is aborted; then every local job is checked as after a watch signal.
   */
  function taken(ids: readonly string[]) {
    for (const id of ids) {
      const held = buffer.find((j) => j.id === id);
      if (held) unbuffer(held);
      running.get(id)?.control.abort("taken");
    }
    return checkTaken();
  }

  /** Aborts (reason "taken") every local job that is no longer running under this pool. */
  async function checkTaken() {
    const queued = [...buffer];
    const fresh = await store.jobs.getMany(queued.map((j) => j.id));
    queued.forEach((job, i) => {
      const j = fresh[i];
      if (
        !j || j.status !== "running" || j.lease?.owner !== ctx.owner || j.attempt !== job.attempt
      ) {
        unbuffer(job);
      }
    });
    const local = [...running.values()];
    const jobs = await store.jobs.getMany(local.map((r) => r.job.id));
    local.forEach((r, i) => {
      const j = jobs[i];
      if (
        !j || j.status !== "running" || j.lease?.owner !== ctx.owner ||
        j.attempt !== r.job.attempt
      ) {
        r.control.abort("taken");
      }
    });
  }

  return { heartbeat, sweep, sweepOnce, watch, checkTaken, taken };
}
