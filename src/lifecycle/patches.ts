/**
 * What each named change of the lifecycle machine does to a job record. Each changes only the
 * draft `next` hands it (never a stored or shared job); a status is never written here (`next`
 * sets it from the machine's target).
 *
 * @module
 */
import { iso } from "../clock.ts";
import type { ErrorContext, Job, PauseReason } from "../types.ts";
import type { JobEvent, PatchName } from "./machine.ts";

/**
 * A change to a job record, made on `draft`: a fresh copy of the job that `next` owns and
 * returns. `at` is `iso(e.now)`, computed once per decision. Fields are set by name: a record
 * given a new field by computed name (Object.assign, a spread) turns into a slow dictionary in
 * V8 once it has ~30 fields, and every later copy of it costs ~6 µs instead of ~0.3.
 */
type Patch = (draft: Job, e: JobEvent, at: string) => void;

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
  start: (d, e, at) => {
    d.lease = e.type === "claim" ? e.lease : null;
    d.attempt = d.attempt + 1;
    d.started_at = at;
    d.pulse_state = null;
  },
  finish: (d, e, at) => {
    d.lease = null;
    d.completed_at = at;
    d.result = e.type === "complete" ? e.result : undefined;
    d.cost_actual = costOf(d, e);
    // The job succeeded: an earlier attempt's error stays in the history, not on the record.
    if (d.error !== undefined) d.error = undefined;
    d.error_context = null;
  },
  record_error: (d, e) => {
    d.error_context = failure(e);
    d.error = failure(e).message;
  },
  to_failed: (d, e, at) => {
    d.lease = null;
    d.completed_at = at;
    d.cost_actual = costOf(d, e);
  },
  to_queued_after_backoff: (d, e) => {
    d.lease = null;
    d.run_at = iso(e.now + ("backoff_ms" in e ? Math.max(0, e.backoff_ms) : 0));
    d.retry_count = d.retry_count + 1;
    d.cost_actual = costOf(d, e);
  },
  to_queued_now: (d, _e, at) => {
    d.lease = null;
    d.run_at = at;
  },
  unpause: (d) => {
    d.pulse_state = null;
  },
  pause: (d, e) => {
    d.lease = null;
    d.pulse_state = pausedState(e.type === "pause" ? e.pause_reason : "user_requested");
  },
  cancel: (d, _e, at) => {
    d.lease = null;
    d.completed_at = at;
  },
  reset_retries: (d, _e, at) => {
    d.retry_count = 0;
    d.run_at = at;
    d.completed_at = null;
  },
};
