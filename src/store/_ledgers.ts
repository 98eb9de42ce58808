/**
 * Budget ledgers touched by one atomic commit: each day/month key is read once, changed in
 * memory as often as the commit needs, then written once with its versionstamp check
 * (admission keys are checked keys, DESIGN invariant 3).
 *
 * @module
 */
import { EMPTY_LEDGER, type Ledger } from "../pulse/mod.ts";
import type { Keys } from "./keys.ts";

type Kind = "day" | "month";

export class Ledgers {
  #entries = new Map<string, { entry: Deno.KvEntryMaybe<Ledger>; value: Ledger; dirty: boolean }>();
  constructor(private kv: Deno.Kv, private keys: Keys) {}

  async #slot(kind: Kind, period: string) {
    const id = `${kind}/${period}`;
    let slot = this.#entries.get(id);
    if (!slot) {
      const entry = await this.kv.get<Ledger>(this.keys.ledger(kind, period));
      slot = { entry, value: { ...(entry.value ?? EMPTY_LEDGER) }, dirty: false };
      this.#entries.set(id, slot);
    }
    return slot;
  }

  async get(kind: Kind, period: string): Promise<Ledger> {
    return { ...(await this.#slot(kind, period)).value };
  }

  /** Adds to a period's spent/reserved (negative releases); never below zero. */
  async add(kind: Kind, period: string, delta: Partial<Ledger>) {
    const slot = await this.#slot(kind, period);
    slot.value = {
      spent: Math.max(0, slot.value.spent + (delta.spent ?? 0)),
      reserved: Math.max(0, slot.value.reserved + (delta.reserved ?? 0)),
    };
    slot.dirty = true;
  }

  /** Adds the same delta to a day and its month. */
  async addBoth(period: { day: string; month: string }, delta: Partial<Ledger>) {
    await this.add("day", period.day, delta);
    await this.add("month", period.month, delta);
  }

  /** Checks and writes every changed ledger. */
  write(op: Deno.AtomicOperation) {
    for (const slot of this.#entries.values()) {
      if (!slot.dirty) continue;
      op.check(slot.entry).set(slot.entry.key, slot.value);
    }
  }
}
