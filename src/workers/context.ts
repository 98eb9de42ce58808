/**
 * What the pool's loops share: one context per pool, created by `createPool` and handed to each
 * loop explicitly (nothing mutable lives at module level).
 *
 * @module
 */
import type { Clock } from "../clock.ts";
import type { Store } from "../store/mod.ts";
import type { Job } from "../types.ts";
import type { createWakeup } from "./wakeup.ts";

export type Wakeup = ReturnType<typeof createWakeup>;

/** A job handed to a worker, until its outcome is committed. */
export interface Running {
  job: Job;
  control: AbortController;
  done: Promise<void>;
}

export interface PoolContext {
  store: Store;
  clock: Clock;
  random: () => number;
  /** This pool's lease owner name; unique per process. */
  owner: string;
  workers: number;
  poll_interval_ms: number;
  lease_ms: number;
  /** Aborted by `stop()`: every loop ends. */
  stopping: AbortController;
  /** Wakes the dispatcher. */
  wakeup: Wakeup;
  /** Wakes the self-resume loop. */
  governWakeup: Wakeup;
  /** Jobs on a worker or waiting for their outcome's commit, by id. */
  running: Map<string, Running>;
  /** Claimed jobs waiting for a worker (see dispatch.ts). */
  buffer: Job[];
  /**
   * Counts signs of new work: an enqueue or resume in this process, a wake-key change from the
   * watch. A dispatcher that found the queue paused lists again only after one (or a poll).
   */
  work: { seen: number };
}

/** The lease under which this pool holds `job`. */
export const leaseOf = (ctx: PoolContext, job: Job) => ({ owner: ctx.owner, attempt: job.attempt });
