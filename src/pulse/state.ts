/**
 * Pure read models of the governor: `GET /api/pulse/budget` and each job's PulseState, both
 * computed from one snapshot of the governor's keys so that they always agree.
 *
 * @module
 */
import type { BudgetState, Job, Limits, PulseState } from "../types.ts";
import { type Ledger, smallestRoom } from "./budget.ts";
import { fromMicros, toMicros } from "./money.ts";
import { live } from "./rate.ts";

/** The governor's keys as read in one `getMany`. */
export interface Snapshot {
  now: number;
  limits: Limits;
  window: readonly number[];
  day: { key: string; ledger: Ledger };
  month: { key: string; ledger: Ledger };
  queue_paused: boolean;
}

/** Limits in micro-dollars, `null` where unset. */
export function limitMicros(limits: Limits) {
  const m = (usd: number | null) => usd === null ? null : toMicros(usd);
  return { day: m(limits.daily_budget_usd), month: m(limits.monthly_budget_usd) };
}

/** Pure: the budget view of a snapshot. */
export function budgetState(s: Snapshot): BudgetState {
  const lim = limitMicros(s.limits);
  const calls = live(s.window, s.now).length;
  const remaining = smallestRoom([
    { ledger: s.day.ledger, limit: lim.day },
    { ledger: s.month.ledger, limit: lim.month },
  ]);
  return {
    ...s.limits,
    spend_today: fromMicros(s.day.ledger.spent),
    spend_this_month: fromMicros(s.month.ledger.spent),
    reserved_today: fromMicros(s.day.ledger.reserved),
    reserved_this_month: fromMicros(s.month.ledger.reserved),
    budget_remaining: remaining === null ? null : fromMicros(remaining),
    calls_this_minute: calls,
    calls_remaining: s.limits.max_calls_per_minute === null
      ? null
      : Math.max(0, s.limits.max_calls_per_minute - calls),
    queue_paused: s.queue_paused,
    today: s.day.key,
    this_month: s.month.key,
  };
}

/** Pure: a job's PulseState: its own pause flag and reason, the counters of the snapshot. */
export function pulseStateOf(job: Job, b: BudgetState): PulseState {
  const reason = job.status === "paused" ? job.pulse_state?.pause_reason : undefined;
  return {
    calls_this_minute: b.calls_this_minute,
    calls_remaining: b.calls_remaining,
    spend_today: b.spend_today,
    spend_this_month: b.spend_this_month,
    budget_remaining: b.budget_remaining,
    is_paused: job.status === "paused",
    ...(reason ? { pause_reason: reason } : {}),
  };
}
