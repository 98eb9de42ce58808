/**
 * The worker pool: one dispatcher claims ready jobs in batches and hands them to N worker
 * actors; a heartbeat renews the leases of running jobs; a sweep expires lost leases; a KV
 * watch wakes the dispatcher for other instances' work and aborts jobs taken away. This file
 * assembles them; each loop lives in its own module (dispatch.ts, recovery.ts, maintenance.ts).
 *
 * @module
 */
import { createActor } from "xstate";
import type { Clock } from "../clock.ts";
import type { Registry } from "../handlers/mod.ts";
import type { RetentionAges, Store } from "../store/mod.ts";
import type { Job } from "../types.ts";
import type { PoolContext, Running } from "./context.ts";
import { createDispatcher } from "./dispatch.ts";
import { createWorker, poolMachine } from "./machines.ts";
import { createMaintenance } from "./maintenance.ts";
import { createRecovery } from "./recovery.ts";
import { createSettle } from "./settle.ts";
import { createWakeup } from "./wakeup.ts";

export { spread } from "./recovery.ts";

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

export function createPool(o: PoolOptions) {
  const { store, clock } = o;
  const random = o.random ?? Math.random;
  const actor = createActor(poolMachine).start();
  const wakeup = createWakeup(clock);
  const governWakeup = createWakeup(clock);
  const stopping = new AbortController();
  const running = new Map<string, Running>();
  const workers = Array.from({ length: o.workers }, createWorker);
  const settle = createSettle(store);
  const work = { seen: 0 };
  const newWork = () => {
    work.seen++;
    wakeup.notify();
  };
  const deps = { store, registry: o.registry, clock, random, wake: newWork, settle };
  let loops: Promise<unknown>[] = [];
  let startedAt = clock.now();
  const buffer: Job[] = [];
  const ctx: PoolContext = {
    store,
    clock,
    random,
    owner: o.owner,
    workers: o.workers,
    poll_interval_ms: o.poll_interval_ms,
    lease_ms: o.lease_ms,
    stopping,
    wakeup,
    governWakeup,
    running,
    buffer,
    work,
  };
  const { dispatch, requeue, takes } = createDispatcher(ctx, workers, deps);
  const { heartbeat, sweep, sweepOnce, watch, checkTaken, taken } = createRecovery(ctx, {
    graceful_start_phase_ms: o.graceful_start_phase_ms,
    startedAt: () => startedAt,
  });
  const { retain, govern } = createMaintenance(ctx, o.retention);

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
      newWork();
      governWakeup.notify();
    },
    /** Checks at once whether a local job was taken away (cancel/pause in this process). */
    checkTaken,
    /** Jobs a cancel or pause in this process took away: never started, or aborted, at once. */
    taken,
    sweepOnce,
    status: () => ({
      state: actor.getSnapshot().value as string,
      workers_active: workers.filter((w) => w.state === "executing").length,
      jobs_claimed_ahead: buffer.length,
      workers_total: o.workers,
    }),
  };
}

export type Pool = ReturnType<typeof createPool>;
