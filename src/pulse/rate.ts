/**
 * The sliding 60-second window (DESIGN invariant 5): the instants of the calls admitted in the
 * last 61 s (see WINDOW_MS). A call at `now` is admitted when fewer than `limit` calls lie in
 * (now − 61 s, now], so no 60-second window ever holds more than `limit` calls, even after a
 * second of delay between admission and the request.
 *
 * @module
 */

/**
 * The window admission counts over: 60 s plus 1 s of slack. A call is admitted at one instant and
 * reaches the provider a little later (commits, scheduling); without the slack, two bursts exactly
 * 60 s apart at admission could land 59.99 s apart at the provider.
 */
export const WINDOW_MS = 61_000;

/** Pure: the calls of `window` still inside the 60 s that end at `now`. */
export function live(window: readonly number[], now: number): number[] {
  return window.filter((t) => t > now - WINDOW_MS && t <= now);
}

export type RateDecision =
  | { ok: true; window: number[] }
  | { ok: false; retry_at: number; window: number[] };

/** Pure: admits one call at `now`, or says when the window will next have room. */
export function admitCall(
  window: readonly number[],
  now: number,
  limit: number | null,
): RateDecision {
  const kept = live(window, now);
  if (limit === null) return { ok: true, window: kept };
  if (kept.length < limit) return { ok: true, window: [...kept, now] };
  // Room appears when the oldest call that keeps us at the limit leaves the window.
  return { ok: false, retry_at: kept[kept.length - limit] + WINDOW_MS, window: kept };
}
