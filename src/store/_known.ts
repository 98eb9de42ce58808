/**
 * The last versionstamped copy of each running job this store wrote itself (claim, lease renewal,
 * progress, checkpoint). A worker's outcome commit decides on that copy and checks its
 * versionstamp instead of reading the job again: a copy gone stale (another instance changed the
 * job) fails the check, and the commit is decided again on a fresh read. So the copy saves a read
 * and can never decide on an old job (DESIGN invariant 1).
 *
 * @module
 */
import type { Job } from "../types.ts";
import type { Keys } from "./keys.ts";

/** Bound on copies kept: a job taken away by another instance is never settled here. */
const MAX_KNOWN = 10_000;

export class Known {
  #copies = new Map<string, Deno.KvEntry<Job>>();
  constructor(private keys: Keys) {}

  /** Records `job` as committed at `versionstamp`; only a running job is kept. */
  wrote(job: Job, versionstamp: string) {
    this.#copies.delete(job.id);
    if (job.status !== "running") return;
    this.#copies.set(job.id, { key: this.keys.job(job.id), value: job, versionstamp });
    if (this.#copies.size > MAX_KNOWN) this.#copies.delete(this.#copies.keys().next().value!);
  }

  /** Drops the copy of a job written by a path that does not record it. */
  forget(id: string) {
    this.#copies.delete(id);
  }

  get(id: string): Deno.KvEntry<Job> | undefined {
    return this.#copies.get(id);
  }
}
