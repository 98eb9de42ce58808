/**
 * The last versionstamped copy of each running or queued job this store wrote itself (insert,
 * claim, lease renewal, progress, checkpoint, requeue). A claim and a worker's outcome decide on
 * that copy and check its versionstamp instead of reading the job again: a copy gone stale
 * (another instance changed the job) fails the check, and the commit is decided again on a fresh
 * read. So a copy saves a read and can never decide on an old job (DESIGN invariant 1).
 *
 * @module
 */
import type { Job } from "../types.ts";
import type { Keys } from "./keys.ts";

/** Bound on running copies kept: a job taken away by another instance is never settled here. */
const MAX_RUNNING = 10_000;
/** Bound on queued copies kept: only the newest matter (they save a claim's read at low load). */
const MAX_QUEUED = 1_000;

export class Known {
  #running = new Map<string, Deno.KvEntry<Job>>();
  #queued = new Map<string, Deno.KvEntry<Job>>();
  constructor(private keys: Keys) {}

  /** Records `job` as committed at `versionstamp`; only a running or queued job is kept. */
  wrote(job: Job, versionstamp: string) {
    this.forget(job.id);
    const copies = job.status === "running"
      ? this.#running
      : job.status === "queued"
      ? this.#queued
      : null;
    if (!copies) return;
    copies.set(job.id, { key: this.keys.job(job.id), value: job, versionstamp });
    const max = copies === this.#running ? MAX_RUNNING : MAX_QUEUED;
    if (copies.size > max) copies.delete(copies.keys().next().value!);
  }

  /** Drops the copy of a job written by a path that does not record it. */
  forget(id: string) {
    this.#running.delete(id);
    this.#queued.delete(id);
  }

  get(id: string): Deno.KvEntry<Job> | undefined {
    return this.#running.get(id) ?? this.#queued.get(id);
  }
}
