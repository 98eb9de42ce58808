/**
 * Budget decisions (DESIGN invariant 4): money is reserved before it is spent, and nothing is
 * admitted once spend + reserved would pass a limit. All amounts are micro-dollars.
 *
 * @module
 */

/** What one budget period (a day or a month) holds. */
export interface Ledger {
  spent: number;
  reserved: number;
}

export const EMPTY_LEDGER: Ledger = { spent: 0, reserved: 0 };

/** Pure: room left in a period, or null when the period has no limit. */
export function room(ledger: Ledger, limit: number | null): number | null {
  return limit === null ? null : Math.max(0, limit - ledger.spent - ledger.reserved);
}

/** Pure: true when `amount` fits every period's limit. */
export function fits(amount: number, periods: readonly { ledger: Ledger; limit: number | null }[]) {
  return periods.every((p) =>
    p.limit === null || p.ledger.spent + p.ledger.reserved + amount <= p.limit
  );
}

/** Pure: the smaller room of the periods, or null when none has a limit. */
export function smallestRoom(periods: readonly { ledger: Ledger; limit: number | null }[]) {
  const rooms = periods.map((p) => room(p.ledger, p.limit)).filter((r): r is number => r !== null);
  return rooms.length ? Math.min(...rooms) : null;
}
