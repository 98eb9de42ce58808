/**
 * `store.jobs`: insert (batched, deduplicated), read, touch (non-status writes of a running
 * job) and remove.
 *
 * @module
 */
import { decodeTime } from "ulid";
import { iso } from "../clock.ts";
import type { Job } from "../types.ts";
import { SCHEMA_VERSION } from "../types.ts";
import { encodeJob } from "./_codec.ts";
import type { Known } from "./_known.ts";
import type { ReadyCopy } from "./_ready.ts";
import { COMMIT_BYTES, Tally, writeNew, writeRemoval } from "./_writes.ts";
import type { Keys } from "./keys.ts";
import { getJob, getJobs, holds } from "./transitions.ts";

export type FinishedStatus = "completed" | "failed" | "cancelled";
/** Age (ms) after which finished jobs are pruned, per status; null keeps them. */
export type RetentionAges = Record<FinishedStatus, number | null>;

/** A job to create; fields as the API's enqueue body, resolved to defaults. */
export interface NewJob {
  handler_name: string;
  payload?: unknown;
  source: string;
  queue: string;
  cost_estimate: number;
  parent_job_id?: string;
  total: number;
  priority: number;
  run_at?: number;
  /** Set by `ctx.spawn`: the child's idempotency key within its parent. */
  spawn_key?: string;
}

export type InsertOutcome =
  | { ok: true; job: Job; created: boolean }
  | { ok: false; code: "unknown_parent"; message: string };

/** Jobs per commit: ~8 mutations each stays under KV's 1000 (and 100 checks). */
const PER_COMMIT = 40;
/** History and link deletions per removal commit, beside the record's own ~12 mutations. */
const DELETES_PER_COMMIT = 500;
/**
 * Finished jobs removed per retention commit: 1 check and ≤ 6 mutations each plus their history
 * and spawn keys, under KV's 100 checks and 1000 mutations (`REMOVAL_MUTATIONS`).
 */
const REMOVALS_PER_COMMIT = 50;
const REMOVAL_MUTATIONS = 900;
/** Value of a `removing` marker: only its key is read. */
const MARK = new Uint8Array(0);

export function createJobs(
  kv: Deno.Kv,
  keys: Keys,
  now: () => number,
  newId: () => string,
  known: Known,
  ready: ReadyCopy,
) {
  async function insert(items: readonly NewJob[]): Promise<InsertOutcome[]> {
    const out: InsertOutcome[] = [];
    for (const chunk of chunksOf(items)) out.push(...await insertChunk(chunk));
    return out;
  }

  async function insertChunk(items: readonly NewJob[]): Promise<InsertOutcome[]> {
    const ids = items.map(() => newId());
    for (let round = 0; round < 32; round++) {
      const t = now();
      const parents = await getJobs(kv, keys, unique(items.map((j) => j.parent_job_id)));
      const parentIds = new Set(parents.filter((e) => e.value).map((e) => e.value!.id));
      const op = kv.atomic();
      const tally = new Tally();
      const claimedHere = new Map<string, Job>(); // dedup inside this batch
      const outcomes: InsertOutcome[] = [];
      for (const [i, item] of items.entries()) {
        if (item.parent_job_id && !parentIds.has(item.parent_job_id)) {
          outcomes.push({
            ok: false,
            code: "unknown_parent",
            message: `Parent job "${item.parent_job_id}" not found`,
          });
          continue;
        }
        const existing = await findExisting(item, op, claimedHere);
        if (existing) {
          outcomes.push({ ok: true, job: existing, created: false });
          continue;
        }
        const built = build(ids[i], item, t);
        const entry = {
          seq: 1,
          at: iso(t),
          event: "enqueue",
          from: null,
          to: built.status,
          attempt: 0,
        };
        const job = writeNew(op, keys, built, entry, tally);
        if (item.spawn_key && item.parent_job_id) {
          op.set(keys.spawned(item.parent_job_id, item.spawn_key), job.id);
        }
        if (job.source) claimedHere.set(dedupKey(job), job);
        outcomes.push({ ok: true, job, created: true });
      }
      if (!outcomes.some((o) => o.ok && o.created)) return outcomes;
      const res = await tally.commit(op, keys, ready);
      if (res.ok) {
        for (const o of outcomes) if (o.ok && o.created) known.wrote(o.job, res.versionstamp);
        return outcomes;
      }
    }
    throw new Error("Cannot insert jobs: too many concurrent updates, try again");
  }

  /** The job this item deduplicates to, or null; adds the absence checks for a new job. */
  async function findExisting(item: NewJob, op: Deno.AtomicOperation, here: Map<string, Job>) {
    if (item.spawn_key && item.parent_job_id) {
      const spawned = await kv.get<string>(keys.spawned(item.parent_job_id, item.spawn_key));
      if (spawned.value) {
        const child = await getJob(kv, keys, spawned.value);
        if (child.value) return child.value;
      }
      op.check(spawned);
    }
    if (!item.source) return null;
    const inBatch = here.get(dedupKey(item));
    if (inBatch) return inBatch;
    const holder = await kv.get<string>(keys.active(item.handler_name, item.source));
    if (holder.value) {
      const job = await getJob(kv, keys, holder.value);
      if (job.value) return job.value;
    }
    op.check(holder);
    return null;
  }

  async function get(id: string): Promise<Job | null> {
    return (await getJob(kv, keys, id)).value;
  }

  async function getMany(ids: readonly string[]): Promise<(Job | null)[]> {
    return (await getJobs(kv, keys, ids)).map((e) => e.value);
  }

  /**
   * Writes a non-status change (progress, checkpoint, cost, lease renewal) to a job its caller
   * runs. Refused (null) when the lease no longer holds; retried on a lost race.
   */
  async function touch(
    id: string,
    lease: { owner: string; attempt: number },
    patch: (job: Job) => Partial<Job>,
  ): Promise<Job | null> {
    for (let round = 0; round < 32; round++) {
      const entry = await getJob(kv, keys, id);
      if (!entry.value || !holds(entry.value, lease)) return null;
      const before = entry.value;
      const after: Job = { ...before, ...patch(before), updated_at: iso(now()) };
      const res = await kv.atomic().check(entry).set(keys.job(id), encodeJob(after)).commit();
      if (res.ok) {
        known.wrote(after, res.versionstamp);
        return after;
      }
    }
    return null;
  }

  /**
   * Removes a job with its history, spawn links, index keys and counters. The commit checks the
   * record's versionstamp, so a job that changes meanwhile (e.g. retried while retention prunes
   * it) keeps all of it. A history and links that fit go in the record's own commit; more than
   * that (over DELETES_PER_COMMIT keys) are deleted after it, the record's commit leaving a
   * `removing` marker that `prune` finishes from should the process die in between: nothing of
   * a job is deleted before its record is.
   */
  async function remove(id: string, expect: (job: Job) => boolean = () => true): Promise<boolean> {
    for (let round = 0; round < 32; round++) {
      const entry = await getJob(kv, keys, id);
      if (!entry.value || !expect(entry.value)) return false;
      const owned = await ownedKeys(entry.value);
      const later = owned.length > DELETES_PER_COMMIT;
      const tally = new Tally();
      const op = kv.atomic().check(entry);
      if (later) op.set(keys.removing(id), MARK);
      else for (const key of owned) op.delete(key);
      writeRemoval(op, keys, entry.value, tally);
      if (!(await tally.commit(op, keys, ready)).ok) continue;
      if (later) await deleteLeftovers(id);
      return true;
    }
    throw new Error(`Cannot remove job "${id}": too many concurrent updates`);
  }

  /**
   * Deletes what a removed job left under its history and spawn-link prefixes, in commits of
   * DELETES_PER_COMMIT, then its `removing` marker. Nothing else writes there once the record
   * is gone (history and links are written with the record checked).
   */
  async function deleteLeftovers(id: string): Promise<void> {
    for (const prefix of [keys.events(id), keys.spawned(id)]) {
      let batch: Deno.KvKey[] = [];
      const flush = async () => {
        const op = kv.atomic();
        for (const key of batch) op.delete(key);
        await op.commit();
        batch = [];
      };
      for await (const e of kv.list({ prefix }, { batchSize: DELETES_PER_COMMIT })) {
        batch.push(e.key);
        if (batch.length === DELETES_PER_COMMIT) await flush();
      }
      if (batch.length) await flush();
    }
    await kv.delete(keys.removing(id));
  }

  /**
   * Removes finished jobs many per commit (retention; `remove` takes one per commit and ~4 round
   * trips, ~620 jobs/s): each record is checked as it was read, and goes with its index keys,
   * history keys and spawn links. A commit that fails (a job changed meanwhile, e.g. retried)
   * leaves every job of it, and they are removed one at a time by `remove`, which reads each
   * again and asks `expect` again. Returns how many were removed.
   */
  async function removeMany(
    entries: readonly Deno.KvEntry<Job>[],
    expect: (job: Job) => boolean,
  ): Promise<number> {
    const owned = await Promise.all(entries.map((e) => ownedKeys(e.value)));
    let removed = 0;
    for (let i = 0; i < entries.length;) {
      const op = kv.atomic();
      const tally = new Tally();
      const batch: Deno.KvEntry<Job>[] = [];
      let mutations = 0;
      for (; i < entries.length && batch.length < REMOVALS_PER_COMMIT; i++) {
        const n = owned[i].length + 8;
        if (batch.length && mutations + n > REMOVAL_MUTATIONS) break;
        if (n > REMOVAL_MUTATIONS) break; // alone, below: its history takes several commits
        op.check(entries[i]);
        for (const key of owned[i]) op.delete(key);
        writeRemoval(op, keys, entries[i].value, tally);
        batch.push(entries[i]);
        mutations += n;
      }
      if (batch.length && (await tally.commit(op, keys, ready)).ok) {
        removed += batch.length;
        continue;
      }
      const alone = batch.length ? batch : [entries[i++]];
      for (const e of alone) if (await remove(e.value.id, expect)) removed++;
    }
    return removed;
  }

  /** A finished job's history keys and spawn links. */
  async function ownedKeys(job: Job): Promise<Deno.KvKey[]> {
    const owned: Deno.KvKey[] = [];
    // A record that still holds its first history entry has never moved entries to a key.
    const seq = job.history?.[0]?.[0];
    if (seq !== 1) {
      for await (const e of kv.list({ prefix: keys.events(job.id) })) owned.push(e.key);
    }
    for await (const e of kv.list({ prefix: keys.spawned(job.id) })) owned.push(e.key);
    return owned;
  }

  /**
   * Retention: removes up to `limit` jobs per status that finished at least `ages[status]` ms
   * before `now`. Walks the status index in id (creation) order and stops at the first job
   * created after the cut-off: it cannot have finished before it. Returns how many were removed.
   */
  async function prune(now: number, ages: RetentionAges, limit = 500): Promise<number> {
    // Removals a stopped process left half done: their records are gone already.
    for await (const e of kv.list({ prefix: keys.removing() })) {
      await deleteLeftovers(e.key[e.key.length - 1] as string);
    }
    let removed = 0;
    for (const [status, age] of Object.entries(ages) as [FinishedStatus, number | null][]) {
      if (age === null) continue;
      const cutoff = now - age;
      let left = limit;
      let ids: string[] = [];
      // Only while still finished: a job retried meanwhile is active again and stays.
      const still = (j: Job) => finishedBy(j, status, cutoff);
      const due = async () => {
        const found = await keptParents((await getJobs(kv, keys, ids))
          .filter((e): e is Deno.KvEntry<Job> => e.value !== null && still(e.value)));
        const n = await removeMany(found.slice(0, left), still);
        removed += n;
        left -= n;
        ids = [];
      };
      for await (const e of kv.list({ prefix: keys.byStatus(status) }, { batchSize: 100 })) {
        const id = e.key[e.key.length - 1] as string;
        if (createdAt(id) > cutoff || left <= 0) break;
        ids.push(id);
        if (ids.length === 100) await due();
      }
      await due();
    }
    return removed;
  }

  /**
   * `entries` without the children whose parent is still stored: a child goes after its parent,
   * so a parent retried later finds the child its spawn key names and never runs it again
   * (ctx.spawn is once per key across retries).
   */
  async function keptParents(entries: Deno.KvEntry<Job>[]): Promise<Deno.KvEntry<Job>[]> {
    const parents = [...new Set(entries.map((e) => e.value.parent_job_id).filter((p) => !!p))];
    if (!parents.length) return entries;
    const found = await getJobs(kv, keys, parents as string[]);
    const stored = new Set(parents.filter((_, i) => found[i].value !== null));
    return entries.filter((e) => !stored.has(e.value.parent_job_id ?? ""));
  }

  return { insert, get, getMany, touch, remove, prune };
}

function build(id: string, item: NewJob, t: number): Job {
  return {
    v: SCHEMA_VERSION,
    id,
    handler_name: item.handler_name,
    ...(item.payload === undefined ? {} : { payload: item.payload }),
    source: item.source,
    status: "queued",
    progress: { current: 0, total: item.total },
    cost_estimate: item.cost_estimate,
    cost_actual: 0,
    pulse_state: null,
    ...(item.parent_job_id ? { parent_job_id: item.parent_job_id } : {}),
    retry_count: 0,
    created_at: iso(t),
    started_at: null,
    completed_at: null,
    updated_at: iso(t),
    queue: item.queue,
    priority: item.priority,
    attempt: 0,
    run_at: iso(Math.max(t, item.run_at ?? t)),
    error_context: null,
    lease: null,
    event_seq: 1,
  };
}

/**
 * Splits jobs into commits that stay within KV's limits: at most PER_COMMIT jobs and
 * COMMIT_BYTES of estimated size (V8's encoding of a payload can be ~2× its JSON, and a queued
 * job's record is written twice: its key and its ready key).
 */
function chunksOf(items: readonly NewJob[]): NewJob[][] {
  const chunks: NewJob[][] = [];
  let chunk: NewJob[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = 4 * (JSON.stringify(item.payload ?? null)?.length ?? 0) + 2048;
    if (chunk.length && (chunk.length >= PER_COMMIT || bytes + size > COMMIT_BYTES)) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(item);
    bytes += size;
  }
  if (chunk.length) chunks.push(chunk);
  return chunks;
}

/** True when `job` is `status` and finished at or before `cutoff` (epoch ms). */
function finishedBy(job: Job, status: FinishedStatus, cutoff: number): boolean {
  return job.status === status && Date.parse(job.completed_at ?? "") <= cutoff;
}

/** The creation time a ULID carries (epoch ms); 0 for an id that is not one (no bound). */
function createdAt(id: string): number {
  try {
    return decodeTime(id);
  } catch {
    return 0;
  }
}

const dedupKey = (j: { handler_name: string; source: string }) =>
  `${j.handler_name}\u0000${j.source}`;
const unique = (xs: (string | undefined)[]) => [...new Set(xs.filter((x): x is string => !!x))];
