/**
 * The key space, documented once. Every key starts with the root prefix `P` (`PULSE_KV_PREFIX`,
 * default `["pulse"]`).
 *
 * | key                                    | value              | written by (atomic op)                          |
 * |----------------------------------------|--------------------|-------------------------------------------------|
 * | P,"job",id                             | Job (as a row)     | jobs.insert, transitions.apply, claims.next,    |
 * |                                        |                    | jobs.touch (progress/checkpoint/lease renew)    |
 * | P,"by_status",status,id                | empty bytes (1)    | jobs.insert, transitions.apply, claims.next     |
 * | P,"by_queue",queue,id                  | empty bytes (1)    | jobs.insert; removed by jobs.remove             |
 * | P,"by_handler",handler_name,id         | empty bytes (1)    | jobs.insert; removed by jobs.remove             |
 * | P,"by_parent",parent_job_id,id         | empty bytes (1)    | jobs.insert; removed by jobs.remove             |
 * | P,"active",handler_name,source         | id                 | set while the job is queued/running/paused and  |
 * |                                        |                    | source ≠ "" (checked absent when set: dedup)    |
 * | P,"ready",run_at_ms,priority,id        | Job (as a row)     | present exactly while the job is queued; a copy |
 * |                                        |                    | of the record, written in the same commit       |
 * | P,"events",id,seq                      | JobEvent rows (2)  | the history entries from seq on, moved out of   |
 * |                                        |                    | the record (Job.history) 8 at a time; one entry |
 * |                                        |                    | per key in files written before                 |
 * | P,"spawned",parent_id,key              | child id           | jobs.insert of a child via ctx.spawn (checked)  |
 * | P,"removing",id                        | empty bytes        | jobs.remove, in the commit that deletes the     |
 * |                                        |                    | record of a job with over 500 history/link keys;|
 * |                                        |                    | deleted once they are (prune finishes leftovers)|
 * | P,"stats",status,"in" / "out"          | Deno.KvU64         | `sum` in the same commit as each status change  |
 * | P,"signal","wake"                      | Deno.KvU64         | bumped when a job becomes ready (watch target)  |
 * | P,"signal","control"                   | Deno.KvU64         | bumped when a running job is paused/cancelled   |
 * | P,"data",namespace,...key              | handler value      | ctx.data of handlers                            |
 * | P,"gov","limits"                       | Limits             | governor.setLimits (checked)                    |
 * | P,"gov","rate"                         | number[] (ms)      | governor.admitCall (checked): calls of last 60 s|
 * | P,"gov","rate",handler_name            | number[] (ms)      | same, for a handler with its own limit          |
 * | P,"gov","day",YYYY-MM-DD               | Ledger (µ$)        | claims.next (reserve), transitions.apply        |
 * | P,"gov","month",YYYY-MM                | Ledger (µ$)        | (release), governor.admitCall / recordCost      |
 * | P,"gov","queue_paused"                 | boolean            | governor.setQueuePaused; checked by claims.next |
 * | P,"gov","waiting",id                   | pause reason       | present while paused for budget or rate         |
 *
 * Job records and history entries are stored as rows of values in a fixed field order
 * (`_codec.ts`): a commit costs by the bytes it writes, and field names were most of them.
 *
 * (1) Only the key is read; files written before hold `true` there.
 * (2) [seq, at (epoch ms), event, from, to, attempt, reason?], the event and statuses as small
 * numbers (`encodeEvent`); files written before hold the text, which still reads.
 *
 * A status count is `in − out` (both only grow, so `sum` never has to decrement).
 *
 * There is no lease index and no finished-at index: each would cost two more writes in every
 * claim and completion commit. The lease sweep reads the running jobs (P,"by_status","running":
 * at most the workers of all instances plus what they claimed ahead), and retention walks
 * P,"by_status",status in id order: a ULID's time is the job's creation, never after it
 * finished, so the walk stops at the first id created after the cut-off.
 *
 * @module
 */
import type { Job, JobStatus } from "../types.ts";

export type Prefix = readonly Deno.KvKeyPart[];

/** Builds every key of one Pulse instance's key space under `prefix`. */
export function createKeys(prefix: Prefix) {
  const P = [...prefix];
  return {
    prefix: P,
    job: (id: string): Deno.KvKey => [...P, "job", id],
    jobs: (): Deno.KvKey => [...P, "job"],
    byStatus: (status: JobStatus, id?: string): Deno.KvKey => tail([...P, "by_status", status], id),
    byQueue: (queue: string, id?: string): Deno.KvKey => tail([...P, "by_queue", queue], id),
    byHandler: (name: string, id?: string): Deno.KvKey => tail([...P, "by_handler", name], id),
    byParent: (parent: string, id?: string): Deno.KvKey => tail([...P, "by_parent", parent], id),
    active: (handler: string, source: string): Deno.KvKey => [...P, "active", handler, source],
    ready: (job?: Pick<Job, "run_at" | "priority" | "id">): Deno.KvKey =>
      job ? [...P, "ready", Date.parse(job.run_at), job.priority, job.id] : [...P, "ready"],
    readyUntil: (ms: number): Deno.KvKey => [...P, "ready", ms],
    events: (id: string): Deno.KvKey => [...P, "events", id],
    event: (id: string, seq: number): Deno.KvKey => [...P, "events", id, seq],
    spawned: (parent: string, key?: string): Deno.KvKey => tail([...P, "spawned", parent], key),
    removing: (id?: string): Deno.KvKey => tail([...P, "removing"], id),
    stat: (status: JobStatus, dir: "in" | "out"): Deno.KvKey => [...P, "stats", status, dir],
    wake: (): Deno.KvKey => [...P, "signal", "wake"],
    control: (): Deno.KvKey => [...P, "signal", "control"],
    data: (ns: string): Deno.KvKey => [...P, "data", ns],
    limits: (): Deno.KvKey => [...P, "gov", "limits"],
    rate: (handler?: string): Deno.KvKey => tail([...P, "gov", "rate"], handler),
    ledger: (kind: "day" | "month", period: string): Deno.KvKey => [...P, "gov", kind, period],
    queuePaused: (): Deno.KvKey => [...P, "gov", "queue_paused"],
    waiting: (id?: string): Deno.KvKey => tail([...P, "gov", "waiting"], id),
  };
}
export type Keys = ReturnType<typeof createKeys>;

function tail(key: Deno.KvKeyPart[], last?: string): Deno.KvKey {
  if (last !== undefined) key.push(last);
  return key;
}
