/**
 * Zod schemas of the seed shapes (../shared/seed-types.md) and Pulse's extensions.
 *
 * Wire field names are the seed's, snake_case. Extensions are added, never renamed. Every
 * TypeScript type is `z.infer` of its schema. Times are RFC 3339 strings; durations are ms.
 *
 * @module
 */
import { z } from "zod";

/** Schema version written into every stored record (DESIGN invariant 8). */
export const SCHEMA_VERSION = 1;

export const JobStatus = z.enum([
  "queued",
  "running",
  "paused",
  "completed",
  "failed",
  "cancelled",
]);
export type JobStatus = z.infer<typeof JobStatus>;
export const JOB_STATUSES: readonly JobStatus[] = JobStatus.options;
/** Statuses in which a job counts as active for deduplication by (handler_name, source). */
export const ACTIVE_STATUSES: readonly JobStatus[] = ["queued", "running", "paused"];

export const ErrorCode = z.enum([
  "ai_error",
  "database_error",
  "file_not_found",
  "network_error",
  "parse_error",
  "timeout",
  "unknown",
  "validation_error",
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

export const ErrorContext = z.object({
  stage: z.string(),
  code: ErrorCode,
  message: z.string(),
  retryable: z.boolean(),
  recoverable: z.boolean(),
});
export type ErrorContext = z.infer<typeof ErrorContext>;

export const Progress = z.object({
  current: z.number().int().nonnegative(),
  total: z.number().int().nonnegative(),
});
export type Progress = z.infer<typeof Progress>;

export const PauseReason = z.enum(["user_requested", "budget_exceeded", "rate_limit"]);
export type PauseReason = z.infer<typeof PauseReason>;

/** Seed PulseState. Limits that are unset are `null` (a documented deviation). */
export const PulseState = z.object({
  calls_this_minute: z.number().int(),
  calls_remaining: z.number().int().nullable(),
  spend_today: z.number(),
  spend_this_month: z.number(),
  budget_remaining: z.number().nullable(),
  is_paused: z.boolean(),
  pause_reason: PauseReason.optional(),
});
export type PulseState = z.infer<typeof PulseState>;

/** The lease a running job holds: who runs it and until when (epoch ms). */
export const Lease = z.object({ owner: z.string(), expires_at: z.string() });
export type Lease = z.infer<typeof Lease>;

/** One entry of a job's history: every transition, with time and reason. */
export const JobEvent = z.object({
  seq: z.number().int(),
  at: z.string(),
  event: z.string(),
  from: JobStatus.nullable(),
  to: JobStatus,
  reason: z.string().optional(),
  attempt: z.number().int(),
});
export type JobEvent = z.infer<typeof JobEvent>;

export const Job = z.object({
  id: z.string(),
  handler_name: z.string(),
  payload: z.unknown().optional(),
  source: z.string(),
  status: JobStatus,
  progress: Progress,
  cost_estimate: z.number(),
  cost_actual: z.number(),
  pulse_state: PulseState.nullable().optional(),
  error: z.string().optional(),
  parent_job_id: z.string().optional(),
  retry_count: z.number().int(),
  created_at: z.string(),
  started_at: z.string().nullable().optional(),
  completed_at: z.string().nullable().optional(),
  updated_at: z.string(),
  // Extensions (never renames of seed fields).
  v: z.literal(SCHEMA_VERSION),
  queue: z.string(),
  priority: z.number().int(),
  attempt: z.number().int(),
  run_at: z.string(),
  result: z.unknown().optional(),
  error_context: ErrorContext.nullable().optional(),
  lease: Lease.nullable().optional(),
  checkpoint: z.unknown().optional(),
  /** Sequence number of the last event appended to this job's history. */
  event_seq: z.number().int(),
  /** Money held for this run, in micro-dollars, charged to the period it was admitted in. */
  reservation: z.object({
    day: z.string(),
    month: z.string(),
    reserved_micros: z.number().int(),
    admitted_micros: z.number().int(),
    /** Set when a call of `needed_micros` was refused for budget: self-resume waits for it. */
    needed_micros: z.number().int().optional(),
    /** Admitted but unrecorded when the run stopped: counted as spent until recorded. */
    assumed_micros: z.number().int().optional(),
  }).nullable().optional(),
  /**
   * Internal, never on the wire: the newest history entries in their stored form (rows, see
   * store/_codec.ts), kept in the record until there are enough to move to one history key
   * (store/_writes.ts). `store.jobs.events` reads both.
   */
  history: z.array(z.array(z.unknown())).optional(),
});
export type Job = z.infer<typeof Job>;

/** Seed QueueStats plus `cancelled`; `total` counts all six statuses. */
export const QueueStats = z.object({
  queued: z.number().int(),
  running: z.number().int(),
  paused: z.number().int(),
  completed: z.number().int(),
  failed: z.number().int(),
  cancelled: z.number().int(),
  total: z.number().int(),
});
export type QueueStats = z.infer<typeof QueueStats>;

export const SystemMetrics = z.object({
  workers_active: z.number().int(),
  workers_total: z.number().int(),
  memory_used_gb: z.number(),
  memory_total_gb: z.number(),
  memory_percent: z.number(),
  jobs_queued: z.number().int(),
  jobs_running: z.number().int(),
  /** Extension: resident set size of this process, in MiB. */
  process_rss_mib: z.number(),
});
export type SystemMetrics = z.infer<typeof SystemMetrics>;

/** Seed WorkerPoolConfig; durations in milliseconds. */
export const WorkerPoolConfig = z.object({
  workers: z.number().int().min(1).max(1000),
  poll_interval: z.number().int().min(1),
  pause_on_budget: z.boolean(),
  graceful_start_phase: z.number().int().min(0),
});
export type WorkerPoolConfig = z.infer<typeof WorkerPoolConfig>;

/** Longest ULID-shaped id accepted in paths and cursors. */
export const JobId = z.string().regex(
  /^[0-9A-HJKMNP-TV-Z]{26}$/,
  "Expected a job id (26-char ULID)",
);

/** Body of `POST /api/pulse/jobs`. Unknown fields are refused (400). */
export const EnqueueRequest = z.strictObject({
  handler_name: z.string().min(1).max(200),
  payload: z.unknown().optional(),
  source: z.string().max(500).optional(),
  queue: z.string().min(1).max(100).regex(/^[A-Za-z0-9_.:-]+$/).optional(),
  cost_estimate: z.number().nonnegative().max(1e9).optional(),
  parent_job_id: JobId.optional(),
  total: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  priority: z.number().int().min(-1000).max(1000).optional(),
  run_at: z.iso.datetime({ offset: true }).optional(),
});
export type EnqueueRequest = z.infer<typeof EnqueueRequest>;

const Usd = z.number().nonnegative().max(1e9);

/** Rate and budget limits (DESIGN configuration table); `null` clears a limit. */
export const Limits = z.object({
  max_calls_per_minute: z.number().int().min(1).max(5000).nullable(),
  daily_budget_usd: Usd.nullable(),
  monthly_budget_usd: Usd.nullable(),
  pause_on_budget: z.boolean(),
  time_zone: z.string().min(1).max(64),
  /**
   * Optional per-handler rate limits, on top of the global one. At most 100: the limits are one
   * KV value (≤ 64 KiB), and 100 names of 200 characters fit with room to spare.
   */
  handler_limits: z.record(
    z.string().min(1).max(200),
    z.strictObject({ max_calls_per_minute: z.number().int().min(1).max(5000).nullable() }),
  ).refine((r) => Object.keys(r).length <= 100, "At most 100 handlers may have their own limit"),
});
export type Limits = z.infer<typeof Limits>;

/** `GET /api/pulse/budget`: the limits plus the figures of this moment. */
export const BudgetState = Limits.extend({
  spend_today: z.number(),
  spend_this_month: z.number(),
  reserved_today: z.number(),
  reserved_this_month: z.number(),
  budget_remaining: z.number().nullable(),
  calls_this_minute: z.number().int(),
  calls_remaining: z.number().int().nullable(),
  queue_paused: z.boolean(),
  today: z.string(),
  this_month: z.string(),
});
export type BudgetState = z.infer<typeof BudgetState>;

/**
 * Deepest nesting of objects and arrays Pulse stores (payloads, results, checkpoints). KV cannot
 * read back a record nested ~2,500 deep (V8's deserializer refuses it, and every list and claim
 * that meets it fails), and measuring one deeper still overflows the stack.
 */
export const MAX_DEPTH = 100;

/** True when `value` nests objects/arrays more than `max` deep (iterative: no stack to overflow). */
export function depthOver(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (depth > max) return true;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}
