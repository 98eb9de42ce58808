/**
 * The store: the only code that touches `Deno.Kv` (DESIGN layer L2). Operations read
 * noun-then-verb: `store.jobs.insert`, `store.claims.next`, `store.transitions.apply`.
 * The key space and which op writes what: `keys.ts`.
 *
 * @module
 */
import { monotonicFactory } from "ulid";
import { Known } from "./_known.ts";
import { ReadyCopy } from "./_ready.ts";
import { createClaims } from "./claims.ts";
import { createData } from "./data.ts";
import { createGovernor } from "./governor.ts";
import { createJobs } from "./jobs.ts";
import { createKeys, type Prefix } from "./keys.ts";
import { createList } from "./list.ts";
import { createStats } from "./stats.ts";
import { createTransitions } from "./transitions.ts";
import type { Limits } from "../types.ts";

export type { InsertOutcome, NewJob, RetentionAges } from "./jobs.ts";
export type { ListFilter, Page } from "./list.ts";
export type { Change, Outcome, RefusalCode } from "./transitions.ts";
export { MAX_CLAIMS_PER_COMMIT } from "./claims.ts";
export type { ReadyKey } from "./_ready.ts";
export {
  decodeEvent,
  decodeEvents,
  decodeJob,
  MAX_PAYLOAD_BYTES,
  payloadBytes,
  recordBytes,
  recordHistory,
} from "./_codec.ts";
export type { CallOutcome, Governor } from "./governor.ts";

/** Limits when neither KV nor the environment sets any: everything admitted. */
export const NO_LIMITS: Limits = {
  max_calls_per_minute: null,
  daily_budget_usd: null,
  monthly_budget_usd: null,
  pause_on_budget: true,
  time_zone: "UTC",
  handler_limits: {},
};

export interface StoreOptions {
  kv: Deno.Kv;
  prefix?: Prefix;
  now: () => number;
  /** Job id source; defaults to monotonic ULIDs of `now()`. */
  newId?: () => string;
  /** Limits used until some are stored in KV (env seeds them). */
  limits?: Limits;
}

/**
 * Builds the store over one `Deno.Kv` handle. Holds no mutable state of its own beyond the id
 * factory, its versionstamped copies of the jobs it runs (checked at every use: _known.ts) and
 * its copy of the ready index (used only while no other writer is seen: _ready.ts), so two
 * stores over one handle race for real.
 *
 * @example
 * ```ts
 * import { createStore } from "./mod.ts";
 * const kv = await Deno.openKv(":memory:");
 * const store = createStore({ kv, now: Date.now });
 * const [r] = await store.jobs.insert([{ handler_name: "demo", source: "", queue: "default",
 *   cost_estimate: 0, total: 0, priority: 0 }]);
 * kv.close();
 * ```
 */
export function createStore(o: StoreOptions) {
  const keys = createKeys(o.prefix ?? ["pulse"]);
  const ulid = monotonicFactory();
  const newId = o.newId ?? (() => ulid(o.now()));
  const known = new Known(keys);
  const ready = new ReadyCopy();
  const jobs = createJobs(o.kv, keys, o.now, newId, known, ready);
  const list = createList(o.kv, keys);
  const seed = o.limits ?? NO_LIMITS;
  const governor = createGovernor(o.kv, keys, o.now, seed, known);
  return {
    keys,
    jobs: { ...jobs, ...list },
    transitions: createTransitions(o.kv, keys, known, ready),
    claims: createClaims(o.kv, keys, o.now, seed, known, ready),
    governor,
    stats: createStats(o.kv, keys),
    data: createData(o.kv, keys),
    /** Resolves on each change of the wake or control signal keys (any instance's commit). */
    watchSignals: () => o.kv.watch([keys.wake(), keys.control()]),
  };
}

export type Store = ReturnType<typeof createStore>;
