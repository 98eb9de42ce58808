/**
 * The governor's pure decisions: the sliding rate window, budget room, money units, budget
 * periods in a time zone, and the read models (budget view, PulseState).
 *
 * @module
 */
export { admitCall, live, type RateDecision, WINDOW_MS } from "./rate.ts";
export { EMPTY_LEDGER, fits, type Ledger, room, smallestRoom } from "./budget.ts";
export { fromMicros, toMicros } from "./money.ts";
export { isTimeZone, periodOf } from "./calendar.ts";
export { budgetState, limitMicros, pulseStateOf, type Snapshot } from "./state.ts";
