/**
 * The sliding 60-second window (DESIGN invariant 5): the instants of the calls admitted in the
 * last 60 s. A call at `now` is admitted when fewer than `limit` calls lie in (now − 60 s, now],
 * so no 60-second window ever holds more than `limit` calls.
 *
 * @module
 */

export const WINDOW_MS = 60_000;

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
