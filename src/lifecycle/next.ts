/**
 * `next(job, event)`: the one decider of every status change (DESIGN invariant 1).
 *
 * @module
 */
import { transition } from "xstate";
import { iso } from "../clock.ts";
import type { Job, JobEvent as HistoryEntry, JobStatus } from "../types.ts";
import { type JobEvent, jobMachine } from "./machine.ts";

export type Decision =
  | { ok: true; job: Job; from: JobStatus; to: JobStatus; entry: HistoryEntry }
  | { ok: false; from: JobStatus; event: JobEvent["type"] };

/**
 * Pure function: the job after `event`, with the history entry to append, or a refusal when
 * the lifecycle table has no such pair. Never throws for a refused pair; never mutates `job`.
 *
 * @example
 * ```ts
 * import { next } from "./next.ts";
 * declare const job: import("../types.ts").Job;
 * const d = next(job, { type: "cancel", now: Date.now() });
 * if (!d.ok) console.log(`refused: ${d.event} from ${d.from}`);
 * ```
 */
export function next(job: Job, event: JobEvent): Decision {
  const from = job.status;
  const snapshot = jobMachine.resolveState({ value: from, context: { job } });
  if (!snapshot.can(event)) return { ok: false, from, event: event.type };
  const [after] = transition(jobMachine, snapshot, event);
  const to = after.value as JobStatus;
  const seq = job.event_seq + 1;
  const decided: Job = { ...after.context.job, status: to, event_seq: seq };
  const entry: HistoryEntry = {
    seq,
    at: iso(event.now),
    event: event.type,
    from,
    to,
    attempt: decided.attempt,
    ...(reasonOf(event, decided) ? { reason: reasonOf(event, decided) } : {}),
  };
  return { ok: true, job: decided, from, to, entry };
}

function reasonOf(event: JobEvent, job: Job): string | undefined {
  if (event.reason) return event.reason;
  if (event.type === "fail") return event.error_context.message;
  if (event.type === "pause") return event.pause_reason;
  if (event.type === "expire") return job.error_context?.message;
  return undefined;
}

/**
 * Pure: delay before retry number `retry` (1-based): 1 s × 2^(retry − 1), ±10 % jitter from
 * `random` in [0, 1), capped at `capMs`.
 */
export function backoffMs(retry: number, random: number, baseMs = 1000, capMs = 30_000): number {
  const raw = baseMs * 2 ** Math.max(0, retry - 1);
  return Math.min(capMs, Math.round(raw * (0.9 + 0.2 * random)));
}
