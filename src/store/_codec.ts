/**
 * How job records and history entries are stored: as a row of values in a fixed field order,
 * not as objects that repeat every field name. A KV commit costs by the bytes it writes, and a
 * job is written at enqueue, claim and completion: a no-op job's record is ~200 bytes as a row
 * and ~480 as an object (the id lives in the key).
 *
 * A row is `[version, rest, ...fields]`: the job schema version (`SCHEMA_VERSION`, DESIGN
 * invariant 8), an object of the fields the layout does not name (null when none), then the
 * values of `JOB_FIELDS` in order. Positions never change: a new field is appended to
 * `JOB_FIELDS` (an older, shorter row reads it as absent), and until then it travels in `rest`,
 * so nothing is ever dropped. Records written as objects (before rows) are still read as they
 * are.
 *
 * @module
 */
import { deserialize, serialize } from "node:v8";
import { type Job, type JobEvent, SCHEMA_VERSION } from "../types.ts";

/** Largest payload a job may carry (bytes as stored): the record's other fields need the rest. */
export const MAX_PAYLOAD_BYTES = 48 * 1024;

/**
 * A payload's size as KV stores it: the largest of its JSON and its V8 encodings. V8's can be
 * twice the JSON (a double is 9 bytes), and an array read back from KV encodes larger than the
 * one parsed from JSON (1,000 ones: 2,009 bytes, then 4,946). A record that fit when first
 * written but not when a claim writes it back would never run, nor let the jobs behind it run.
 */
export function payloadBytes(payload: unknown): number {
  return Math.max(
    new TextEncoder().encode(JSON.stringify(payload ?? null)).length,
    serialize(deserialize(serialize(payload ?? null))).length,
  );
}

/** Field order of a stored job row, after the version. Append only. */
const JOB_FIELDS = [
  "handler_name",
  "payload",
  "source",
  "status",
  "progress",
  "cost_estimate",
  "cost_actual",
  "pulse_state",
  "error",
  "parent_job_id",
  "retry_count",
  "created_at",
  "started_at",
  "completed_at",
  "updated_at",
  "queue",
  "priority",
  "attempt",
  "run_at",
  "result",
  "error_context",
  "lease",
  "checkpoint",
  "event_seq",
  "reservation",
  "history",
] as const;

type Field = (typeof JOB_FIELDS)[number];
const NAMED = new Set<string>(["id", "v", ...JOB_FIELDS]);

function pack(field: Field, value: unknown): unknown {
  if (field === "progress" && value) {
    const p = value as Job["progress"];
    return [p.current, p.total];
  }
  if (field === "lease" && value) {
    const l = value as NonNullable<Job["lease"]>;
    return [l.owner, l.expires_at];
  }
  if (field === "history" && value) return (value as JobEvent[]).map(encodeEvent);
  return value;
}

function unpack(field: Field, value: unknown): unknown {
  if (field === "progress" && Array.isArray(value)) return { current: value[0], total: value[1] };
  if (field === "lease" && Array.isArray(value)) return { owner: value[0], expires_at: value[1] };
  if (field === "history" && Array.isArray(value)) return value.map(decodeEvent);
  return value;
}

/** The stored form of a job record. */
export function encodeJob(job: Job): unknown[] {
  let rest: Record<string, unknown> | null = null;
  for (const k in job) {
    const v = job[k as keyof Job];
    if (v !== undefined && !NAMED.has(k)) (rest ??= {})[k] = v;
  }
  const row: unknown[] = [SCHEMA_VERSION, rest];
  for (let i = 0; i < JOB_FIELDS.length; i++) row.push(pack(JOB_FIELDS[i], job[JOB_FIELDS[i]]));
  return row;
}

/** The job record stored under `id` (a row, or an object written before rows). */
export function decodeJob(id: string, stored: unknown): Job {
  if (!Array.isArray(stored)) return stored as Job;
  const job: Record<string, unknown> = { v: stored[0], id };
  for (let i = 0; i < JOB_FIELDS.length; i++) {
    const value = stored[i + 2];
    if (value !== undefined) job[JOB_FIELDS[i]] = unpack(JOB_FIELDS[i], value);
  }
  const rest = stored[1];
  if (rest && typeof rest === "object") Object.assign(job, rest);
  return job as Job;
}

/**
 * The stored form of a history entry: [seq, at, event, from, to, attempt, reason?]. A history
 * key holds one entry, or (written since entries wait in the record) an array of entries.
 */
export function encodeEvent(e: JobEvent): unknown[] {
  const row = [e.seq, e.at, e.event, e.from, e.to, e.attempt];
  if (e.reason !== undefined) row.push(e.reason);
  return row;
}

/** The entries one history key holds. */
export function decodeEvents(stored: unknown): JobEvent[] {
  return Array.isArray(stored) && Array.isArray(stored[0])
    ? stored.map(decodeEvent)
    : [decodeEvent(stored)];
}

export function decodeEvent(stored: unknown): JobEvent {
  if (!Array.isArray(stored)) return stored as JobEvent;
  const [seq, at, event, from, to, attempt, reason] = stored;
  return {
    seq,
    at,
    event,
    from,
    to,
    attempt,
    ...(reason === undefined ? {} : { reason }),
  };
}

/**
 * A generous estimate of a job record's stored bytes, for sizing commits under KV's 800 KiB per
 * commit: V8's encoding of a value can be ~2× its JSON (two-byte strings), plus ~1 KiB of fields.
 */
export function recordBytes(job: Job): number {
  let n = 1024;
  for (const v of [job.payload, job.checkpoint, job.result, job.error_context, job.error]) {
    if (v !== null && v !== undefined) n += 2 * (JSON.stringify(v)?.length ?? 0);
  }
  // History entries: their fixed fields (~80 characters as JSON) and their reasons.
  for (const e of job.history ?? []) n += 2 * (128 + (e.reason?.length ?? 0));
  return n;
}

/** A KV entry of a job record, decoded (the versionstamp is the stored row's). */
export function jobEntry(e: Deno.KvEntryMaybe<unknown>): Deno.KvEntryMaybe<Job> {
  if (e.value === null) return e as Deno.KvEntryMaybe<Job>;
  const id = e.key[e.key.length - 1] as string;
  return { key: e.key, value: decodeJob(id, e.value), versionstamp: e.versionstamp! };
}
