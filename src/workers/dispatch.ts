/**
 * The dispatcher: claims ready jobs in batches ahead of the workers (up to two claims in flight)
 * and hands them to idle worker actors; a worker is free again once its job's outcome is handed
 * to the group commit.
 *
 * @module
 */
import { MAX_CLAIMS_PER_COMMIT, type ReadyKey } from "../store/mod.ts";
import type { Job } from "../types.ts";
import { leaseOf, type PoolContext } from "./context.ts";
import { execute, type ExecuteDeps } from "./execute.ts";
import type { Worker } from "./machines.ts";
import { MAX_SETTLE_BATCH } from "./settle.ts";

/** Returns the dispatch loop, `requeue` and the claims in flight (`stop()` waits for them). */
export function createDispatcher(ctx: PoolContext, workers: Worker[], deps: ExecuteDeps) {
  const { store, clock, stopping, running, buffer, wakeup, governWakeup } = ctx;

  /** Outcomes handed to the group commit and not committed yet (their workers are free). */
  let settling = 0;

  /**
   * Runs `job` on `worker`. The worker is free once the job's outcome is handed to the group
   * commit: it takes its next job while that commit is in flight. The job itself stays in
   * `running` (its lease renewed, `stop()` waiting for it) until the commit lands.
   */
  function run(worker: Worker, job: Job) {
    const control = new AbortController();
    worker.send({ type: "run", jobId: job.id });
    let freed = false;
    const free = () => {
      if (freed) return;
      freed = true;
      worker.send({ type: "done" });
      wakeup.notify();
    };
    const own: ExecuteDeps = {
      ...deps,
      settle: (change) => {
        free();
        settling++;
        return deps.settle(change).finally(() => settling--);
      },
    };
    const done = execute(job, own, control)
      .then(() => {}, (err) => console.error(`Job "${job.id}" ended with an engine error:`, err))
      .finally(() => {
        running.delete(job.id);
        free();
        wakeup.notify();
        if (job.reservation) governWakeup.notify(); // the money it held is released
      });
    running.set(job.id, { job, control, done });
  }

  /**
   * Claimed jobs wait for a worker in `ctx.buffer`. Claiming up to twice the workers ahead lets
   * a single commit claim many jobs, instead of one job per commit as workers free up one by one.
   */
  const prefetch = Math.min(2 * ctx.workers, 2 * MAX_CLAIMS_PER_COMMIT);

  /**
   * Claims in flight: at most two (while backlogged), the second listing the ready index after
   * the first one's last key, so one claim's reads overlap the other's commit and they never
   * race each other.
   */
  const takes = new Set<Promise<void>>();
  /** Jobs listed by the claims in flight (room they will take). */
  let claiming = 0;
  /** The last ready key listed by a claim in flight. */
  let listedUpTo: ReadyKey | null = null;
  /**
   * The last listing filled its claim: there is a backlog, and a second claim may overlap the
   * first. Without one, claims go one at a time and gather more jobs each, fewer commits.
   */
  let backlogged = false;
  /** The work count when a claim last found the queue paused (null: it was not paused). */
  let pausedAt: { work: number; at: number } | null = null;

  function claim(ids: string[], rows?: ReadonlyMap<string, Deno.KvEntry<Job>>) {
    claiming += ids.length;
    const take = store.claims.take(ids, { owner: ctx.owner, lease_ms: ctx.lease_ms }, rows)
      .then(async ({ claimed, paused }) => {
        pausedAt = paused ? { work: ctx.work.seen, at: clock.now() } : null;
        // stop() began while this claim was in flight: give the jobs back, never start them.
        if (stopping.signal.aborted) await requeue(claimed, "Pool stopped before the job started");
        else buffer.push(...claimed);
      })
      .catch(async (err) => {
        // A KV error must not end the process: say so, wait a poll, try again.
        console.error("Claim failed:", err);
        await clock.sleep(ctx.poll_interval_ms, stopping.signal);
      })
      .finally(() => {
        claiming -= ids.length;
        takes.delete(take);
        wakeup.notify();
      });
    takes.add(take);
  }

  async function dispatch() {
    while (!stopping.signal.aborted) {
      let idle = workers.filter((w) => w.state === "idle");
      if (idle.length && buffer.length) {
        while (idle.length && buffer.length) run(idle.shift()!, buffer.shift()!);
        // Let the jobs just handed out start (a quick one ends in this turn) before sizing the claim.
        await new Promise((r) => setTimeout(r, 0));
        idle = workers.filter((w) => w.state === "idle");
      }
      const busy = ctx.workers - idle.length;
      // Outcomes waiting for their commit hold room once there are more than two commits' worth.
      const backlog = Math.max(0, settling - 2 * MAX_SETTLE_BATCH);
      const room = ctx.workers + prefetch - busy - buffer.length - claiming - backlog;
      const lookedAt = clock.now();
      const lanes = backlogged ? 2 : 1;
      // A paused queue is looked at again on new work (its resume is one) or after a poll.
      const held = pausedAt !== null && pausedAt.work === ctx.work.seen &&
        clock.now() - pausedAt.at < ctx.poll_interval_ms;
      if (
        room > 0 && !held && takes.size < lanes &&
        (idle.length > 0 || buffer.length < prefetch / 2)
      ) {
        const after = takes.size ? listedUpTo ?? undefined : undefined;
        const listed = await store.claims.ready(room, after).catch(async (err) => {
          console.error("Claim failed:", err);
          await clock.sleep(ctx.poll_interval_ms, stopping.signal);
          return { ids: [], last: null, rows: undefined };
        });
        if (stopping.signal.aborted) break;
        backlogged = listed.ids.length >= Math.min(room, MAX_CLAIMS_PER_COMMIT);
        if (listed.ids.length) {
          listedUpTo = listed.last;
          claim(listed.ids, listed.rows);
          continue;
        }
      }
      // A claim in flight wakes the loop when it lands.
      if (takes.size) {
        await wakeup.wait(ctx.poll_interval_ms, stopping.signal);
        continue;
      }
      // The deadline is absolute: time that passed while reading it does not lengthen the sleep.
      const at = await wakeAt(idle.length > 0).catch(() => clock.now() + ctx.poll_interval_ms);
      // A job that became due after the claim looked (time moved meanwhile): claim it now. One
      // that was already due and still not claimed (queue paused, lost races) waits a poll.
      if (at <= clock.now() && at > lookedAt) continue;
      const until = at <= lookedAt ? lookedAt + ctx.poll_interval_ms : at;
      await wakeup.wait(Math.max(1, until - clock.now()), stopping.signal);
    }
  }

  /** Gives claimed jobs back to the queue (not a retry), under this pool's lease. */
  async function requeue(jobs: Job[], reason: string) {
    if (!jobs.length) return;
    await store.transitions.apply(jobs.map((job) => ({
      id: job.id,
      lease: leaseOf(ctx, job),
      event: () => ({ type: "requeue" as const, now: clock.now(), reason }),
    })));
  }

  /** When to wake (epoch ms): at the next scheduled job, at most a poll interval from now. */
  async function wakeAt(hasIdle: boolean): Promise<number> {
    const poll = clock.now() + ctx.poll_interval_ms;
    if (!hasIdle) return poll;
    const at = await store.claims.nextRunAt();
    return at === null ? poll : Math.min(poll, at);
  }

  return { dispatch, requeue, takes };
}
