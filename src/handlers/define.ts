/**
 * The handler contract: `defineHandler(...)` and the `ctx` a handler's `run` receives.
 * This interface is fixed (DESIGN "Handlers"); parts that later issues fill in keep their shape.
 *
 * @module
 */
import type { z } from "zod";

/** Key parts allowed in `ctx.data` keys (Deno KV key parts, minus bigint/Uint8Array). */
export type DataKeyPart = string | number | boolean;
export type DataKey = readonly DataKeyPart[];

/** One write of {@link HandlerData.commit}. */
export type DataOp =
  | { type: "set"; key: DataKey; value: unknown }
  | { type: "delete"; key: DataKey };

/**
 * The handler's own key/value storage, namespaced inside Pulse's KV. Values must fit a KV value
 * (64 KiB serialised).
 */
export interface HandlerData {
  get<T = unknown>(key: DataKey): Promise<T | null>;
  set(key: DataKey, value: unknown): Promise<void>;
  delete(key: DataKey): Promise<void>;
  /** Every entry whose key starts with `prefix`, in key order. */
  list<T = unknown>(
    prefix: DataKey,
    options?: { limit?: number },
  ): AsyncIterable<{ key: DataKey; value: T }>;
  /** Writes all ops in one atomic commit (at most 1000 ops and 800 KiB). */
  commit(ops: readonly DataOp[]): Promise<void>;
  /** Writes many entries, in as few commits as KV's limits allow (not atomic as a whole). */
  setMany(entries: readonly { key: DataKey; value: unknown }[]): Promise<void>;
}

/** What `ctx.spawn` takes: a child job of the running job. */
export interface SpawnRequest {
  handler_name: string;
  payload?: unknown;
  source?: string;
  queue?: string;
  cost_estimate?: number;
  total?: number;
  /**
   * Idempotency key of this child within its parent: a re-run of the parent that spawns with
   * the same key gets the same child back instead of a new one. Defaults to the spawn's ordinal
   * in this attempt (0, 1, 2, …), which is stable when the handler spawns in a stable order.
   */
  key?: string;
}

export interface SpawnedJob {
  id: string;
  created: boolean;
}

export interface HandlerLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Everything a handler's `run` receives. */
export interface HandlerContext<P> {
  /** The payload, validated against the handler's schema. */
  readonly payload: P;
  readonly job: {
    readonly id: string;
    readonly handler_name: string;
    readonly queue: string;
    readonly parent_job_id?: string;
  };
  /** 1 on the first start, +1 on every start; never resets. */
  readonly attempt: number;
  /** Aborts when the job is cancelled or paused, or the pool stops. */
  readonly signal: AbortSignal;
  /** Reports progress; written to the job record. */
  progress(current: number, total?: number): Promise<void>;
  readonly pulse: {
    /**
     * Admits one external call under the rate limit and budget. When refused, the job is paused
     * (`rate_limit` / `budget_exceeded`, keeping its checkpoint), this throws, and the job
     * resumes by itself when room appears.
     */
    call(options?: { cost_usd?: number }): Promise<void>;
  };
  /**
   * Records money actually spent (added to the job's `cost_actual` and today's spend). Always
   * recorded, even after a cancel; the job's outcome waits for pending records.
   */
  recordCost(usd: number): Promise<void>;
  /** Enqueues a child job (parent = this job), exactly once per key. */
  spawn(child: SpawnRequest): Promise<SpawnedJob>;
  /** Saves `data` with the job; the next attempt sees it as `lastCheckpoint`. */
  checkpoint(data: unknown): Promise<void>;
  readonly lastCheckpoint: unknown;
  readonly data: HandlerData;
  readonly log: HandlerLog;
}

export interface HandlerDefinition<S extends z.ZodType = z.ZodType> {
  name: string;
  description: string;
  payload: S;
  /** Storage namespace of `ctx.data`; defaults to `name`. Sibling handlers may share one. */
  dataNamespace?: string;
  /** Expected cost in USD of one run with this payload. */
  estimateCost?: (payload: z.infer<S>) => number;
  run(ctx: HandlerContext<z.infer<S>>): Promise<unknown> | unknown;
}

/** A handler as registered: the definition plus a brand that discovery checks. */
export type Handler<S extends z.ZodType = z.ZodType> = HandlerDefinition<S> & {
  readonly kind: "pulse.handler";
};

/**
 * Declares a handler. A module in the handlers folder default-exports the result.
 *
 * @example
 * ```ts
 * import { defineHandler, z } from "../src/mod.ts";
 * export default defineHandler({
 *   name: "demo.echo",
 *   description: "Returns its payload",
 *   payload: z.object({ text: z.string() }),
 *   run: (ctx) => ({ echoed: ctx.payload.text }),
 * });
 * ```
 */
export function defineHandler<S extends z.ZodType>(def: HandlerDefinition<S>): Handler<S> {
  if (!/^[a-z0-9][a-z0-9_.-]{0,199}$/i.test(def.name)) {
    throw new TypeError(`Cannot define handler "${def.name}": name must match [a-z0-9_.-]`);
  }
  return Object.freeze({ ...def, kind: "pulse.handler" as const });
}

/** A handler of any payload type, as the registry holds them. */
// deno-lint-ignore no-explicit-any
export type AnyHandler = Handler<any>;

/** Guard for a module's default export. */
export function isHandler(value: unknown): value is AnyHandler {
  const h = value as AnyHandler | null;
  return !!h && h.kind === "pulse.handler" && typeof h.name === "string" &&
    typeof h.run === "function" && typeof h.payload?.safeParse === "function";
}
