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
import { iso } from "../clock.ts";
import { type Job, JOB_STATUSES, type JobEvent, SCHEMA_VERSION } from "../types.ts";

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
export const JOB_FIELDS = [
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
  return value;
}

function unpack(field: Field, value: unknown): unknown {
  if (field === "progress" && Array.isArray(value)) return { current: value[0], total: value[1] };
  if (field === "lease" && Array.isArray(value)) return { owner: value[0], expires_at: value[1] };
  return value;
}

/**
 * The stored form of a job record: `JOB_FIELDS` in order, each read by name and the row built at
 * its full length at once (a row grown by push was most of a record write's garbage). A test
 * reads back a row with every field set, so this and `JOB_FIELDS` cannot drift.
 */
export function encodeJob(job: Job): unknown[] {
  let rest: Record<string, unknown> | null = null;
  for (const k in job) {
    const v = job[k as keyof Job];
    if (v !== undefined && !NAMED.has(k)) (rest ??= {})[k] = v;
  }
  return [
    SCHEMA_VERSION,
    rest,
    job.handler_name,
    job.payload,
    job.source,
    job.status,
    pack("progress", job.progress),
    job.cost_estimate,
    job.cost_actual,
    job.pulse_state,
    job.error,
    job.parent_job_id,
    job.retry_count,
    job.created_at,
    job.started_at,
    job.completed_at,
    job.updated_at,
    job.queue,
    job.priority,
    job.attempt,
    job.run_at,
    job.result,
    job.error_context,
    pack("lease", job.lease),
    job.checkpoint,
    job.event_seq,
    job.reservation,
    job.history,
  ];
}

/** The job record stored under `id` (a row, or an object written before rows). */
export function decodeJob(id: string, stored: unknown): Job {
  if (!Array.isArray(stored)) return stored as Job;
  const job = fromRow(id, stored);
  const rest = stored[1];
  if (rest && typeof rest === "object") Object.assign(job, rest);
  return job as Job;
}

/**
 * A row's fields, each set by name in `JOB_FIELDS` order. Written out, not looped over the
 * names: an object given more than a dozen properties by computed name turns into a slow
 * dictionary (V8), and every later copy of it (`next`, ~30 fields) then cost ~6 µs, not 0.2.
 * A test reads a row back with every field set, so this and `JOB_FIELDS` cannot drift.
 */
function fromRow(id: string, r: unknown[]): Partial<Job> {
  const job: Partial<Job> = { v: r[0] as Job["v"], id };
  if (r[2] !== undefined) job.handler_name = r[2] as string;
  if (r[3] !== undefined) job.payload = r[3];
  if (r[4] !== undefined) job.source = r[4] as string;
  if (r[5] !== undefined) job.status = r[5] as Job["status"];
  if (r[6] !== undefined) job.progress = unpack("progress", r[6]) as Job["progress"];
  if (r[7] !== undefined) job.cost_estimate = r[7] as number;
  if (r[8] !== undefined) job.cost_actual = r[8] as number;
  if (r[9] !== undefined) job.pulse_state = r[9] as Job["pulse_state"];
  if (r[10] !== undefined) job.error = r[10] as string;
  if (r[11] !== undefined) job.parent_job_id = r[11] as string;
  if (r[12] !== undefined) job.retry_count = r[12] as number;
  if (r[13] !== undefined) job.created_at = r[13] as string;
  if (r[14] !== undefined) job.started_at = r[14] as string | null;
  if (r[15] !== undefined) job.completed_at = r[15] as string | null;
  if (r[16] !== undefined) job.updated_at = r[16] as string;
  if (r[17] !== undefined) job.queue = r[17] as string;
  if (r[18] !== undefined) job.priority = r[18] as number;
  if (r[19] !== undefined) job.attempt = r[19] as number;
  if (r[20] !== undefined) job.run_at = r[20] as string;
  if (r[21] !== undefined) job.result = r[21];
  if (r[22] !== undefined) job.error_context = r[22] as Job["error_context"];
  if (r[23] !== undefined) job.lease = unpack("lease", r[23]) as Job["lease"];
  if (r[24] !== undefined) job.checkpoint = r[24];
  if (r[25] !== undefined) job.event_seq = r[25] as number;
  if (r[26] !== undefined) job.reservation = r[26] as Job["reservation"];
  if (r[27] !== undefined) job.history = r[27] as Job["history"];
  return job;
}

/** A history entry as stored (see encodeEvent). */
export type EventRow = unknown[];

/** Event names and statuses stored as their index here (append only); others as text. */
const EVENT_NAMES = [
  "enqueue",
  "claim",
  "complete",
  "fail",
  "expire",
  "requeue",
  "pause",
  "resume",
  "cancel",
  "retry",
];
const codeOf = (names: readonly string[], name: string | null) => {
  const i = name === null ? -1 : names.indexOf(name);
  return i < 0 ? name : i;
};
const nameOf = <T extends string>(names: readonly T[], code: unknown) =>
  (typeof code === "number" ? names[code] : code) as T;

/**
 * The stored form of a history entry: [seq, at_hi, at_lo, event, from, to, attempt, reason?].
 * `at` is epoch ms in two parts (at_hi × 10^6 + at_lo) and the event and statuses are small
 * numbers, so the row is all small integers: V8 stores those in 1–5 bytes each, where one number
 * past 2^30 turns the array into 9-byte doubles, and the text form was ~60 bytes an entry. A job
 * record carries its newest entries, written at every claim and completion. A time that is not
 * canonical text, and entries stored before, hold [seq, at, event, from, to, attempt, reason?]
 * with `at` as text, which still reads. A history key holds one entry, or (written since entries
 * wait in the record) an array of entries.
 */
export function encodeEvent(e: JobEvent): EventRow {
  const ms = Date.parse(e.at);
  // `| 0`: integers, not doubles that hold one (an array holding a double stores all as doubles).
  const at = iso(ms) === e.at ? [(ms / 1e6) | 0, (ms % 1e6) | 0] : [e.at];
  const row = [
    e.seq,
    ...at,
    codeOf(EVENT_NAMES, e.event),
    codeOf(JOB_STATUSES, e.from),
    codeOf(JOB_STATUSES, e.to),
    e.attempt,
  ];
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
  const split = typeof stored[1] === "number";
  const at = split ? iso(stored[1] * 1e6 + stored[2]) : stored[1];
  const [event, from, to, attempt, reason] = stored.slice(split ? 3 : 2);
  return {
    seq: stored[0],
    at,
    event: nameOf(EVENT_NAMES, event),
    from: from === null ? null : nameOf(JOB_STATUSES, from),
    to: nameOf(JOB_STATUSES, to),
    attempt,
    ...(reason === undefined ? {} : { reason }),
  };
}

/** The history entries a job record holds (they move to history keys 8 at a time). */
export const recordHistory = (job: Job): JobEvent[] => (job.history ?? []).map(decodeEvent);

/** Characters of reasons in history rows (compact or text form). */
export function reasonsLength(rows: readonly EventRow[]): number {
  let n = 0;
  for (const r of rows) {
    const reason = r[typeof r[1] === "number" ? 7 : 6];
    if (typeof reason === "string") n += reason.length;
  }
  return n;
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
  // History entries: their fixed fields (~40 characters as JSON) and their reasons.
  if (job.history) n += 2 * (128 * job.history.length + reasonsLength(job.history));
  return n;
}

/** A KV entry of a job record, decoded (the versionstamp is the stored row's). */
export function jobEntry(e: Deno.KvEntryMaybe<unknown>): Deno.KvEntryMaybe<Job> {
  if (e.value === null) return e as Deno.KvEntryMaybe<Job>;
  const id = e.key[e.key.length - 1] as string;
  return { key: e.key, value: decodeJob(id, e.value), versionstamp: e.versionstamp! };
}
