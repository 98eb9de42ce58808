/**
 * What each named change of the lifecycle machine does to a job record. Pure functions; a
 * status is never written here (`next` sets it from the machine's target).
 *
 * @module
 */
import { iso } from "../clock.ts";
import type { ErrorContext, Job, PauseReason } from "../types.ts";
import type { JobEvent, PatchName } from "./machine.ts";

/** A change to a job record; `at` is `iso(e.now)`, computed once per decision. */
type Patch = (job: Job, e: JobEvent, at: string) => Partial<Job>;

const costOf = (job: Job, e: JobEvent) =>
  "cost_actual" in e && e.cost_actual !== undefined ? e.cost_actual : job.cost_actual;

/** The failure a `fail` carries, or the one an `expire` means. */
function failure(e: JobEvent): ErrorContext {
  if (e.type === "fail") return e.error_context;
  return {
    stage: "lease",
    code: "timeout",
    message: e.reason ?? "Lease expired before the job finished",
    retryable: true,
    recoverable: true,
  };
}

function pausedState(reason: PauseReason) {
  return {
    calls_this_minute: 0,
    calls_remaining: null,
    spend_today: 0,
    spend_this_month: 0,
    budget_remaining: null,
    is_paused: true,
    pause_reason: reason,
  };
}

export const PATCHES: Record<PatchName, Patch> = {
  start: (job, e, at) => ({
    lease: e.type === "claim" ? e.lease : null,
    attempt: job.attempt + 1,
    started_at: at,
    pulse_state: null,
  }),
  finish: (job, e, at) => ({
    lease: null,
    completed_at: at,
    result: e.type === "complete" ? e.result : undefined,
    cost_actual: costOf(job, e),
    // The job succeeded: an earlier attempt's error stays in the history, not on the record.
    error: undefined,
    error_context: null,
  }),
  record_error: (_job, e) => ({ error_context: failure(e), error: failure(e).message }),
  to_failed: (job, e, at) => ({ lease: null, completed_at: at, cost_actual: costOf(job, e) }),
  to_queued_after_backoff: (job, e) => ({
    lease: null,
    run_at: iso(e.now + ("backoff_ms" in e ? Math.max(0, e.backoff_ms) : 0)),
    retry_count: job.retry_count + 1,
    cost_actual: costOf(job, e),
  }),
  to_queued_now: (_job, _e, at) => ({ lease: null, run_at: at }),
  unpause: () => ({ pulse_state: null }),
  pause: (_job, e) => ({
    lease: null,
    pulse_state: pausedState(e.type === "pause" ? e.pause_reason : "user_requested"),
  }),
  cancel: (_job, _e, at) => ({ lease: null, completed_at: at }),
  reset_retries: (_job, _e, at) => ({ retry_count: 0, run_at: at, completed_at: null }),
};
