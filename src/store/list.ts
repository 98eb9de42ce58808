/**
 * `store.jobs.list`: pages of jobs, oldest first (ULID order), through the most selective
 * index; `store.jobs.events`: a job's history.
 *
 * The cursor is the id of the last job returned, so a walk sees every job exactly once even
 * while jobs are added or change status.
 *
 * @module
 */
import type { Job, JobEvent, JobStatus } from "../types.ts";
import { decodeEvents, jobEntry, recordHistory } from "./_codec.ts";
import type { Keys } from "./keys.ts";
import { getJob, getJobs } from "./transitions.ts";

export interface ListFilter {
  status?: JobStatus;
  handler_name?: string;
  queue?: string;
  parent_job_id?: string;
}

export interface Page {
  jobs: Job[];
  next_cursor: string | null;
}

export function createList(kv: Deno.Kv, keys: Keys) {
  /** One page of at most `limit` jobs after `cursor` that match every field of `filter`. */
  async function list(filter: ListFilter, limit: number, cursor?: string): Promise<Page> {
    const prefix = indexOf(keys, filter);
    const selector: Deno.KvListSelector = cursor
      ? { prefix, start: [...prefix, `${cursor}\u0000`] }
      : { prefix };
    // Collect limit + 1 matches: the extra one only tells whether a next page exists.
    const found: Job[] = [];
    const direct = !filter.status && !filter.handler_name && !filter.queue && !filter.parent_job_id;
    const pageSize = Math.min(500, limit + 1);
    let ids: string[] = [];
    const flush = async () => {
      for (const e of await getJobs(kv, keys, ids)) {
        if (e.value && matches(e.value, filter)) found.push(e.value);
      }
      ids = [];
    };
    for await (const e of kv.list(selector, { batchSize: pageSize })) {
      if (direct) found.push(jobEntry(e).value!);
      else ids.push(e.key[e.key.length - 1] as string);
      if (ids.length >= pageSize) await flush();
      if (found.length > limit) break;
    }
    if (found.length <= limit && ids.length) await flush();
    const jobs = found.slice(0, limit);
    return { jobs, next_cursor: found.length > limit ? jobs[jobs.length - 1].id : null };
  }

  /**
   * A job's history: the entries moved to history keys and those still in the record. The record
   * is read first: entries that move to a key after that read are then found in the keys.
   */
  async function events(id: string): Promise<JobEvent[]> {
    const bySeq = new Map<number, JobEvent>();
    const record = (await getJob(kv, keys, id)).value;
    for (const entry of record ? recordHistory(record) : []) {
      bySeq.set(entry.seq, entry);
    }
    for await (const e of kv.list({ prefix: keys.events(id) })) {
      for (const entry of decodeEvents(e.value)) bySeq.set(entry.seq, entry);
    }
    return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
  }

  return { list, events };
}

/** The index whose prefix narrows the walk most; other filters are applied to the records. */
function indexOf(keys: Keys, f: ListFilter): Deno.KvKey {
  if (f.parent_job_id) return keys.byParent(f.parent_job_id);
  if (f.handler_name && !f.status) return keys.byHandler(f.handler_name);
  if (f.status) return keys.byStatus(f.status);
  if (f.queue) return keys.byQueue(f.queue);
  return keys.jobs();
}

function matches(job: Job, f: ListFilter): boolean {
  return (!f.status || job.status === f.status) &&
    (!f.handler_name || job.handler_name === f.handler_name) &&
    (!f.queue || job.queue === f.queue) &&
    (!f.parent_job_id || job.parent_job_id === f.parent_job_id);
}
