/**
 * The mutations of one job change, added to an atomic op: the record, every index key that
 * follows from its status, the history entry, and the stats tally. Shared by insert, claim and
 * transition so that the indexes can never disagree with the record.
 *
 * @module
 */
import { ACTIVE_STATUSES, type Job, type JobEvent, type JobStatus } from "../types.ts";
import { encodeEvent, encodeJob, reasonsLength } from "./_codec.ts";
import type { ReadyChange, ReadyCopy } from "./_ready.ts";
import type { Keys } from "./keys.ts";

/**
 * Bytes one commit may carry by estimate (`recordBytes`), well under KV's 800 KiB: keys, history
 * entries and indexes come on top of the records.
 */
export const COMMIT_BYTES = 600 * 1024;

/** Status counts and signals of one commit, applied as `sum` mutations at the end. */
export class Tally {
  readonly in = new Map<JobStatus, number>();
  readonly out = new Map<JobStatus, number>();
  wake = false;
  control = false;
  /** Ready keys this commit adds and deletes, for the store's copy of the ready index. */
  readonly ready: ReadyChange[] = [];

  move(from: JobStatus | null, to: JobStatus | null) {
    if (from === to) return;
    if (from) this.out.set(from, (this.out.get(from) ?? 0) + 1);
    if (to) this.in.set(to, (this.in.get(to) ?? 0) + 1);
    if (to === "queued") this.wake = true;
  }

  /** Adds the `sum` mutations (one per key, so a batch never sums one key twice). */
  apply(op: Deno.AtomicOperation, keys: Keys) {
    for (const [s, n] of this.in) op.sum(keys.stat(s, "in"), BigInt(n));
    for (const [s, n] of this.out) op.sum(keys.stat(s, "out"), BigInt(n));
    if (this.wake) op.sum(keys.wake(), 1n);
    if (this.control) op.sum(keys.control(), 1n);
  }

  /** Adds the sums and commits `op`; the ready copy learns what the commit changed. */
  commit(op: Deno.AtomicOperation, keys: Keys, copy: ReadyCopy) {
    this.apply(op, keys);
    return copy.commit(op, this.wake, this.ready);
  }
}

/**
 * The value of an index key (by_status, by_queue, by_handler, by_parent): only its key is ever
 * read. Empty bytes are stored as they are, where `true` costs a V8 serialization per write.
 */
const INDEXED = new Uint8Array(0);

const readyKey = (job: Job) => [Date.parse(job.run_at), job.priority, job.id] as const;

const isActive = (s: JobStatus) => ACTIVE_STATUSES.includes(s);

/** Why a paused job waits for the governor (budget/rate), or null (not paused, or by a user). */
function waitingFor(job: Job) {
  const reason = job.status === "paused" ? job.pulse_state?.pause_reason : undefined;
  return reason && reason !== "user_requested" ? reason : null;
}

/**
 * History entries wait in the record (`Job.history`) and move to one history key when there are
 * this many: a transition then writes the record alone, not the record and a history key (a
 * commit costs by its mutations, and most jobs never reach this many entries).
 */
const ENTRIES_IN_RECORD = 8;

/** Reasons (characters) the record's entries may hold before they move to a key. */
const REASONS_IN_RECORD = 1024;

/**
 * `job` with `entry` appended to its history; full (8 entries, or long reasons such as error
 * messages, which the record already holds twice), the entries move to one history key.
 */
function recorded(op: Deno.AtomicOperation, keys: Keys, job: Job, entry: JobEvent): Job {
  const history = [...(job.history ?? []), encodeEvent(entry)];
  if (history.length < ENTRIES_IN_RECORD && reasonsLength(history) <= REASONS_IN_RECORD) {
    return { ...job, history };
  }
  op.set(keys.event(job.id, history[0][0] as number), history);
  return { ...job, history: [] };
}

/**
 * Writes a new job and all of its keys; returns the job as stored (with its first history
 * entry). The caller checks the `active` key when deduplicating.
 */
export function writeNew(
  op: Deno.AtomicOperation,
  keys: Keys,
  created: Job,
  entry: JobEvent,
  t: Tally,
): Job {
  const job = recorded(op, keys, created, entry);
  const row = encodeJob(job);
  op.set(keys.job(job.id), row)
    .set(keys.byStatus(job.status, job.id), INDEXED)
    .set(keys.byQueue(job.queue, job.id), INDEXED)
    .set(keys.byHandler(job.handler_name, job.id), INDEXED);
  if (job.parent_job_id) op.set(keys.byParent(job.parent_job_id, job.id), INDEXED);
  if (job.source && isActive(job.status)) op.set(keys.active(job.handler_name, job.source), job.id);
  if (job.status === "queued") {
    op.set(keys.ready(job), row);
    t.ready.push([readyKey(job), true]);
  }
  t.move(null, job.status);
  return job;
}

/**
 * Writes a change from `before` to `after` (same id) and its history `entry`; returns the job as
 * stored (`after` with the entry in its history). The caller has added the versionstamp check
 * of `before`, and the absence check of the `active` key when the job becomes active.
 */
export function writeChange(
  op: Deno.AtomicOperation,
  keys: Keys,
  before: Job,
  decided: Job,
  entry: JobEvent | null,
  t: Tally,
): Job {
  const after = entry ? recorded(op, keys, decided, entry) : decided;
  const row = encodeJob(after);
  op.set(keys.job(after.id), row);
  if (before.status !== after.status) {
    op.delete(keys.byStatus(before.status, before.id))
      .set(keys.byStatus(after.status, after.id), INDEXED);
    if (after.source && isActive(before.status) && !isActive(after.status)) {
      op.delete(keys.active(after.handler_name, after.source));
    }
    if (after.source && !isActive(before.status) && isActive(after.status)) {
      op.set(keys.active(after.handler_name, after.source), after.id);
    }
    // Another actor took a running job away: its worker must hear of it at once.
    if (
      before.status === "running" && (after.status === "paused" || after.status === "cancelled")
    ) {
      t.control = true;
    }
  }
  if (before.status === "queued") {
    op.delete(keys.ready(before));
    t.ready.push([readyKey(before), false]);
  }
  if (after.status === "queued") {
    op.set(keys.ready(after), row);
    t.ready.push([readyKey(after), true]);
  }
  const waiting = waitingFor(after);
  if (waitingFor(before) && !waiting) op.delete(keys.waiting(after.id));
  if (waiting) op.set(keys.waiting(after.id), waiting);
  t.move(before.status, after.status);
  return after;
}

/** Deletes a job's record and index keys (not its history, which may exceed one commit). */
export function writeRemoval(op: Deno.AtomicOperation, keys: Keys, job: Job, t: Tally) {
  op.delete(keys.job(job.id))
    .delete(keys.byStatus(job.status, job.id))
    .delete(keys.byQueue(job.queue, job.id))
    .delete(keys.byHandler(job.handler_name, job.id));
  if (job.parent_job_id) op.delete(keys.byParent(job.parent_job_id, job.id));
  if (job.status === "queued") {
    op.delete(keys.ready(job));
    t.ready.push([readyKey(job), false]);
  }
  if (waitingFor(job)) op.delete(keys.waiting(job.id));
  if (job.source && isActive(job.status)) op.delete(keys.active(job.handler_name, job.source));
  t.move(job.status, null);
}
