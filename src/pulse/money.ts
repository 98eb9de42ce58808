/**
 * Money on the wire is USD as a float; in KV it is integer micro-dollars (DESIGN invariant 4).
 *
 * @module
 */

/** USD → micro-dollars, rounding half up. */
export function toMicros(usd: number): number {
  if (!Number.isFinite(usd) || usd < 0) {
    throw new RangeError(`Cannot use ${usd} as money: use a number ≥ 0`);
  }
  return Math.floor(usd * 1e6 + 0.5);
}

/** Micro-dollars → USD. */
export function fromMicros(micros: number): number {
  return micros / 1e6;
}
