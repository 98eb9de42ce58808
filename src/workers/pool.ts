/**
 * The worker pool: one dispatcher claims ready jobs in batches and hands them to N worker
 * actors; a heartbeat renews the leases of running jobs; a sweep expires lost leases; a KV
 * watch wakes the dispatcher for other instances' work and aborts jobs taken away.
 *
 * @module
 */
import { createActor } from "xstate";
import type { Clock } from "../clock.ts";
import { iso } from "../clock.ts";
import type { Registry } from "../handlers/mod.ts";
import { backoffMs } from "../lifecycle/mod.ts";
import {
  type Change,
  MAX_CLAIMS_PER_COMMIT,
  type Outcome,
  type RetentionAges,
  type Store,
} from "../store/mod.ts";
import { createBatcher } from "./batcher.ts";
import type { Job } from "../types.ts";
import { execute } from "./execute.ts";
import { createWorker, poolMachine, type Worker } from "./machines.ts";
import { resumeWaiting } from "./resume.ts";
import { createWakeup } from "./wakeup.ts";

export interface PoolOptions {
  store: Store;
  registry: Registry;
  clock: Clock;
  /** This pool's lease owner name; unique per process. */
  owner: string;
  workers: number;
  poll_interval_ms: number;
  lease_ms: number;
  stop_timeout_ms: number;
  /** After a start, jobs recovered from expired leases are spread over this long (ms). */
  graceful_start_phase_ms?: number;
  /** Finished jobs older than this (ms, per status) are pruned; null keeps them. */
  retention?: RetentionAges;
  random?: () => number;
}

/** Outcomes per group commit: ≤ 8 mutations and 1 check each (+ ≤ 4 ledger checks), under KV's 1000 / 100. */
const MAX_SETTLE_BATCH = 90;
const MAX_SETTLE_BYTES = 480 * 1024;

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

/** How often the retention loop looks for finished jobs to prune (clock ms). */
const RETENTION_EVERY_MS = 60_000;

interface Running {
  job: Job;
  control: AbortController;
  done: Promise<void>;
}

export function createPool(o: PoolOptions) {
  const { store, clock } = o;
  const random = o.random ?? Math.random;
  const actor = createActor(poolMachine).start();
  const wakeup = createWakeup(clock);
  const governWakeup = createWakeup(clock);
  const stopping = new AbortController();
  const running = new Map<string, Running>();
  const workers = Array.from({ length: o.workers }, createWorker);
  const outcomes = createBatcher(settleMany, MAX_SETTLE_BATCH);
  const settle = async (change: Change): Promise<Outcome> => {
    const r = await outcomes.submit(change);
    if (r instanceof Error) throw r;
    return r;
  };
  const deps = { store, registry: o.registry, clock, random, wake: () => wakeup.notify(), settle };
  const leaseOf = (job: Job) => ({ owner: o.owner, attempt: job.attempt });
  let loops: Promise<unknown>[] = [];
  let startedAt = clock.now();

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
        out.push(...await store.transitions.apply(group));
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
    const own: typeof deps = {
      ...deps,
      settle: (change) => {
        free();
        settling++;
        return settle(change).finally(() => settling--);
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
   * Claimed jobs waiting for a worker. Claiming up to twice the workers ahead lets a single
   * commit claim many jobs, instead of one job per commit as workers free up one by one.
   */
  const buffer: Job[] = [];
  const prefetch = Math.min(2 * o.workers, 2 * MAX_CLAIMS_PER_COMMIT);

  /**
   * Claims in flight: at most two, the second listing the ready index after the first one's
   * last key, so one claim's reads overlap the other's commit and they never race each other.
   */
  const takes = new Set<Promise<void>>();
  /** Jobs listed by the claims in flight (room they will take). */
  let claiming = 0;
  /** The last ready key listed by a claim in flight. */
  let listedUpTo: Deno.KvKey | null = null;

  function claim(ids: string[]) {
    claiming += ids.length;
    const take = store.claims.take(ids, { owner: o.owner, lease_ms: o.lease_ms })
      .then(async ({ claimed }) => {
        // stop() began while this claim was in flight: give the jobs back, never start them.
        if (stopping.signal.aborted) await requeue(claimed, "Pool stopped before the job started");
        else buffer.push(...claimed);
      })
      .catch(async (err) => {
        // A KV error must not end the process: say so, wait a poll, try again.
        console.error("Claim failed:", err);
        await clock.sleep(o.poll_interval_ms, stopping.signal);
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
      const busy = o.workers - idle.length;
      // Outcomes waiting for their commit hold room once there are more than two commits' worth.
      const backlog = Math.max(0, settling - 2 * MAX_SETTLE_BATCH);
      const room = o.workers + prefetch - busy - buffer.length - claiming - backlog;
      const lookedAt = clock.now();
      if (room > 0 && takes.size < 2 && (idle.length > 0 || buffer.length < prefetch / 2)) {
        const after = takes.size ? listedUpTo ?? undefined : undefined;
        const listed = await store.claims.ready(room, after).catch(async (err) => {
          console.error("Claim failed:", err);
          await clock.sleep(o.poll_interval_ms, stopping.signal);
          return { ids: [], last: null };
        });
        if (stopping.signal.aborted) break;
        if (listed.ids.length) {
          listedUpTo = listed.last;
          claim(listed.ids);
          continue;
        }
      }
      // A claim in flight wakes the loop when it lands.
      if (takes.size) {
        await wakeup.wait(o.poll_interval_ms, stopping.signal);
        continue;
      }
      // The deadline is absolute: time that passed while reading it does not lengthen the sleep.
      const at = await wakeAt(idle.length > 0).catch(() => clock.now() + o.poll_interval_ms);
      // A job that became due after the claim looked (time moved meanwhile): claim it now. One
      // that was already due and still not claimed (queue paused, lost races) waits a poll.
      if (at <= clock.now() && at > lookedAt) continue;
      const until = at <= lookedAt ? lookedAt + o.poll_interval_ms : at;
      await wakeup.wait(Math.max(1, until - clock.now()), stopping.signal);
    }
  }

  /** Gives claimed jobs back to the queue (not a retry), under this pool's lease. */
  async function requeue(jobs: Job[], reason: string) {
    if (!jobs.length) return;
    await store.transitions.apply(jobs.map((job) => ({
      id: job.id,
      lease: leaseOf(job),
      event: () => ({ type: "requeue" as const, now: clock.now(), reason }),
    })));
  }

  /** When to wake (epoch ms): at the next scheduled job, at most a poll interval from now. */
  async function wakeAt(hasIdle: boolean): Promise<number> {
    const poll = clock.now() + o.poll_interval_ms;
    if (!hasIdle) return poll;
    const at = await store.claims.nextRunAt();
    return at === null ? poll : Math.min(poll, at);
  }

  const renew = (job: Job) =>
    store.jobs.touch(job.id, leaseOf(job), () => ({
      lease: { owner: o.owner, expires_at: iso(clock.now() + o.lease_ms) },
    }));

  /** Renews the lease of every running job; a job whose lease is gone is abandoned. */
  async function heartbeat() {
    const every = Math.max(1, Math.floor(o.lease_ms / 3));
    while (!stopping.signal.aborted) {
      await clock.sleep(every, stopping.signal);
      try {
        for (const r of [...running.values()]) {
          if (!(await renew(r.job))) r.control.abort("taken");
        }
        for (const job of [...buffer]) {
          if (!(await renew(job))) buffer.splice(buffer.indexOf(job), 1);
        }
      } catch (err) {
        console.error("Lease renewal failed (retried next beat):", err);
      }
    }
  }

  /** Expires every running job whose lease ran out (any owner), page by page. */
  async function sweep() {
    const every = Math.max(1, Math.min(5000, Math.floor(o.lease_ms / 2)));
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
    const phaseLeft = Math.max(0, startedAt + (o.graceful_start_phase_ms ?? 0) - now);
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

  /** Prunes finished jobs past their retention age, in rounds of 500. */
  async function retain() {
    const ages = o.retention;
    if (!ages) return;
    while (!stopping.signal.aborted) {
      const removed = await store.jobs.prune(clock.now(), ages, 500).catch((err) => {
        console.error("Retention round failed:", err);
        return 0;
      });
      if (removed < 500) await clock.sleep(RETENTION_EVERY_MS, stopping.signal);
    }
  }

  /** Resumes jobs paused for budget or rate as room appears (see resume.ts). */
  async function govern() {
    while (!stopping.signal.aborted) {
      const started = clock.now();
      const { next_at } = await resumeWaiting(store, () => clock.now()).catch((err) => {
        console.error("Self-resume round failed:", err);
        return { next_at: null };
      });
      // The deadline is absolute: time that passed during the round (a day that rolled over
      // while it read) does not lengthen the sleep; a deadline already past runs a round now.
      const at = Math.min(started + o.poll_interval_ms, next_at ?? Infinity);
      await governWakeup.wait(Math.max(0, at - clock.now()), stopping.signal);
    }
  }

  /** Wakes on any instance's enqueue; aborts local jobs another actor took away. */
  async function watch() {
    const stream = store.watchSignals();
    const reader = stream.getReader();
    stopping.signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
    let lastControl: string | null = null;
    while (!stopping.signal.aborted) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done || !value) break;
      wakeup.notify();
      governWakeup.notify();
      const control = value[1].versionstamp;
      if (control !== lastControl) {
        lastControl = control;
        await checkTaken();
      }
    }
  }

  /** Aborts (reason "taken") every local job that is no longer running under this pool. */
  async function checkTaken() {
    const queued = [...buffer];
    const fresh = await store.jobs.getMany(queued.map((j) => j.id));
    queued.forEach((job, i) => {
      const j = fresh[i];
      if (!j || j.status !== "running" || j.lease?.owner !== o.owner || j.attempt !== job.attempt) {
        buffer.splice(buffer.indexOf(job), 1);
      }
    });
    const local = [...running.values()];
    const jobs = await store.jobs.getMany(local.map((r) => r.job.id));
    local.forEach((r, i) => {
      const j = jobs[i];
      if (
        !j || j.status !== "running" || j.lease?.owner !== o.owner || j.attempt !== r.job.attempt
      ) {
        r.control.abort("taken");
      }
    });
  }

  return {
    start() {
      startedAt = clock.now();
      loops = [dispatch(), heartbeat(), sweep(), watch(), govern(), retain()];
      actor.send({ type: "started" });
    },
    /** Stops claiming, aborts handlers, waits up to the stop timeout, re-queues the rest. */
    async stop(): Promise<void> {
      if (stopping.signal.aborted) return void await Promise.all(loops);
      actor.send({ type: "stop" });
      stopping.abort();
      wakeup.notify();
      governWakeup.notify();
      for (const r of running.values()) r.control.abort("stop");
      await requeue(buffer.splice(0), "Pool stopped before the job started");
      await Promise.all([...takes]); // each gives its jobs back itself
      const allDone = Promise.all([...running.values()].map((r) => r.done));
      const timeout = new AbortController();
      await Promise.race([allDone, clock.sleep(o.stop_timeout_ms, timeout.signal)]);
      timeout.abort();
      await requeue([...running.values()].map((r) => r.job), "Pool stopped: stop timeout");
      await Promise.all(loops);
      actor.send({ type: "stopped" });
    },
    /** Wakes the dispatcher now (new work in this process). */
    wake: () => {
      wakeup.notify();
      governWakeup.notify();
    },
    /** Checks at once whether a local job was taken away (cancel/pause in this process). */
    checkTaken,
    sweepOnce,
    status: () => ({
      state: actor.getSnapshot().value as string,
      workers_active: running.size,
      jobs_claimed_ahead: buffer.length,
      workers_total: o.workers,
    }),
  };
}

export type Pool = ReturnType<typeof createPool>;
