/**
 * Runs one claimed job: validates its payload again, builds `ctx`, runs the handler and reports
 * the outcome through the lifecycle (complete / fail / requeue), always under the job's lease.
 *
 * @module
 */
import type { z } from "zod";
import type { Clock } from "../clock.ts";
import { boundMessage, classifyError, isTooLarge, PermanentError } from "../errors.ts";
import type { AnyHandler as Handler, HandlerContext, SpawnRequest } from "../handlers/mod.ts";
import type { Registry } from "../handlers/mod.ts";
import { backoffMs } from "../lifecycle/mod.ts";
import { toMicros } from "../pulse/mod.ts";
import {
  type Change,
  MAX_PAYLOAD_BYTES,
  type Outcome,
  payloadBytes,
  recordBytes,
  type Store,
} from "../store/mod.ts";
import { depthOver, type ErrorContext, type Job, MAX_DEPTH } from "../types.ts";
import { createJobLog } from "./log.ts";

export interface ExecuteDeps {
  store: Store;
  registry: Registry;
  clock: Clock;
  random: () => number;
  /** Wakes this instance's dispatcher (after a spawn). */
  wake: () => void;
  /** Commits a job's outcome (group-committed with other workers' outcomes). */
  settle: (change: Change) => Promise<Outcome>;
}

/** Why a running job's signal aborted. */
export type AbortReason = "stop" | "taken";

/** Largest payload + checkpoint a record holds (bytes as stored): the rest of 64 KiB is fields. */
const MAX_RECORD_DATA_BYTES = 56 * 1024;

/** Longest error message kept when the full one does not fit in the job record. */
const SHORT_MESSAGE_BYTES = 256;

/** Largest `result` kept with a job (KV values are ≤ 64 KiB with the rest of the record). */
const MAX_RESULT_BYTES = 32 * 1024;

/**
 * Runs `job` (claimed by `owner`) to an outcome. `control` aborts with "stop" (pool stopping:
 * the job is re-queued unless the handler finishes) or "taken" (cancelled/paused/lease lost:
 * the worker walks away at once and any late outcome is refused by the lease check).
 */
export async function execute(job: Job, deps: ExecuteDeps, control: AbortController) {
  const { clock } = deps;
  const lease = { owner: job.lease!.owner, attempt: job.attempt };
  const handler = deps.registry.get(job.handler_name);
  // What an outcome writes, for sizing group commits: the record, and the ready key's copy of
  // it when the job goes back to queued (a retry, a requeue).
  const written = 2 * recordBytes(job);
  const failWith = (ec: ErrorContext, minDelayMs: number) =>
    deps.settle({
      id: job.id,
      lease,
      size_hint: written,
      event: (j) => ({
        type: "fail",
        now: clock.now(),
        error_context: ec,
        backoff_ms: Math.max(minDelayMs, backoffMs(j.retry_count + 1, deps.random())),
      }),
    });
  const fail = async (ec: ErrorContext, minDelayMs = 0) => {
    try {
      return await failWith(ec, minDelayMs);
    } catch (err) {
      // A record filled close to 64 KiB (payload + checkpoint) may not take a long message
      // (stored twice, and in the history): store the outcome with a short one rather than
      // leave the job running until its lease ends and lose the error anyway.
      if (!isTooLarge(err)) throw err;
      const short = boundMessage(ec.message, SHORT_MESSAGE_BYTES);
      return await failWith({ ...ec, message: `${short} (the job record is full)` }, minDelayMs);
    }
  };
  if (!handler) {
    return await fail(permanent("dispatch", `No handler named "${job.handler_name}" is loaded`));
  }
  const parsed = handler.payload.safeParse(job.payload);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i: z.core.$ZodIssue) =>
      `payload.${i.path.join(".")}: ${i.message}`
    );
    return await fail(permanent("validate", `Payload no longer valid: ${detail.join("; ")}`));
  }
  const pending: Promise<unknown>[] = []; // cost records still being written
  const ctx = buildContext(job, handler, parsed.data, deps, control, lease, pending);
  const taken = new Promise<"taken">((resolve) => {
    control.signal.addEventListener("abort", () => {
      if (control.signal.reason === "taken") resolve("taken");
    });
  });
  let outcome: { ok: true; result: unknown } | { ok: false; error: unknown } | "taken";
  try {
    outcome = await Promise.race([
      Promise.resolve(handler.run(ctx)).then((result) => ({ ok: true as const, result })),
      taken,
    ]);
  } catch (error) {
    outcome = { ok: false, error };
  }
  if (pending.length) await Promise.allSettled(pending);
  if (outcome === "taken") return;
  if (outcome.ok) {
    // The result is kept as the API answers it, as JSON: one JSON cannot hold (a BigInt, an
    // object that contains itself) fails the job, where it used to end the run with an engine
    // error and leave the job running until its lease expired.
    const stored = storedResult(outcome.result ?? null);
    if ("stage" in stored) return await fail(stored);
    const { result, size } = stored;
    try {
      return await deps.settle({
        id: job.id,
        lease,
        size_hint: size + written,
        event: () => ({
          type: "complete",
          now: clock.now(),
          result,
        }),
      });
    } catch (err) {
      // Payload + checkpoint + result can pass KV's 64 KiB per value even when each is under
      // its own limit: fail the job at once rather than leave it running until its lease ends.
      if (!isTooLarge(err)) throw err;
      return await fail(
        permanent("result", `Result does not fit in the job record: ${(err as Error).message}`),
      );
    }
  }
  if (control.signal.aborted && control.signal.reason === "stop") {
    return await deps.settle({
      id: job.id,
      lease,
      size_hint: written,
      event: () => ({ type: "requeue", now: clock.now(), reason: "Pool stopped" }),
    });
  }
  // A handler may say when a retry can succeed (e.g. HTTP Retry-After): never retry sooner.
  const after = Number((outcome.error as { retry_after_ms?: unknown })?.retry_after_ms);
  return await fail(classifyError(outcome.error, "run"), Number.isFinite(after) ? after : 0);
}

/**
 * The result as it is kept: null, a string, a number or a boolean as it is; anything else as its
 * JSON form (a Map or a Set becomes {}, a Date its ISO text, toJSON is honoured), so what is
 * measured, stored and served is one value. A function or a symbol anywhere in it is refused
 * where JSON.stringify would leave it out without a word; so are a getter that throws, a BigInt,
 * a cycle, and nesting past MAX_DEPTH (deep enough to overflow the stack, or found after parsing).
 */
function storedResult(value: unknown): { result: unknown; size: number } | ErrorContext {
  const deep = () => permanent("result", `Result is nested deeper than ${MAX_DEPTH} levels`);
  let json: string | undefined;
  try {
    json = JSON.stringify(value, refuseCode);
  } catch (err) {
    if (err instanceof RangeError) return deep();
    return permanent("result", `Result cannot be stored as JSON: ${(err as Error)?.message}`);
  }
  if (json === undefined) {
    return permanent(
      "result",
      `Result cannot be stored as JSON: a ${typeof value} has no JSON form`,
    );
  }
  if (json.length > MAX_RESULT_BYTES) {
    return permanent("result", `Result is ${json.length} bytes, over ${MAX_RESULT_BYTES}`);
  }
  if (isPlain(value)) return { result: value, size: json.length };
  const result = JSON.parse(json);
  return depthOver(result, MAX_DEPTH) ? deep() : { result, size: json.length };
}

function refuseCode(key: string, value: unknown): unknown {
  const kind = typeof value;
  if (kind === "function" || kind === "symbol") {
    throw new TypeError(`${key ? `"${key}" is` : "it is"} a ${kind}`);
  }
  return value;
}

const isPlain = (v: unknown) =>
  v === null || v === undefined || ["string", "number", "boolean"].includes(typeof v);

function permanent(stage: string, message: string): ErrorContext {
  return classifyError(new PermanentError(message, "validation_error"), stage);
}

function buildContext<P>(
  job: Job,
  handler: Handler,
  payload: P,
  deps: ExecuteDeps,
  control: AbortController,
  lease: { owner: string; attempt: number },
  pending: Promise<unknown>[],
): HandlerContext<P> {
  const { store } = deps;
  const signal = control.signal;
  let spawned = 0;
  const touch = async (patch: (j: Job) => Partial<Job>) => {
    const after = await store.jobs.touch(job.id, lease, patch);
    if (!after) throw new Error(`Job "${job.id}" is no longer held by this worker`);
  };
  return {
    payload,
    job: {
      id: job.id,
      handler_name: job.handler_name,
      queue: job.queue,
      ...(job.parent_job_id ? { parent_job_id: job.parent_job_id } : {}),
    },
    attempt: job.attempt,
    signal,
    progress: (current, total) => {
      const ok = (n: number) => Number.isSafeInteger(n) && n >= 0;
      if (!ok(current) || (total !== undefined && !ok(total))) {
        throw new RangeError(`Cannot report progress ${current}/${total}: use integers ≥ 0`);
      }
      return touch((j) => ({ progress: { current, total: total ?? j.progress.total } }));
    },
    pulse: {
      async call(options) {
        signal.throwIfAborted();
        const micros = toMicros(options?.cost_usd ?? 0);
        const admitted = await store.governor.admitCall(job.id, lease, micros);
        if (admitted.ok) return;
        // The job is paused (or gone) already, in the refusal's commit: walk away at once.
        control.abort("taken");
        throw new CallRefused(admitted.reason);
      },
    },
    recordCost(usd) {
      const micros = toMicros(usd);
      const write = micros > 0 ? store.governor.recordCost(job.id, micros) : Promise.resolve(null);
      pending.push(write);
      return write.then(() => {});
    },
    spawn: (child) => spawn(child, String(spawned++)),
    checkpoint: (data) => {
      if (depthOver(data, MAX_DEPTH)) {
        throw new PermanentError(
          `Checkpoint is nested deeper than ${MAX_DEPTH} levels`,
          "validation_error",
        );
      }
      // Measured as KV will store it, read back included (see payloadBytes): a record that fit
      // when written but not when read back could never be written again.
      const size = payloadBytes(data) + payloadBytes(job.payload);
      if (size > MAX_RECORD_DATA_BYTES) {
        throw new PermanentError(
          `Checkpoint and payload are ${size} bytes stored; a job record holds at most ` +
            `${MAX_RECORD_DATA_BYTES}`,
          "validation_error",
        );
      }
      return touch(() => ({ checkpoint: data }));
    },
    lastCheckpoint: job.checkpoint,
    data: store.data(handler.dataNamespace ?? handler.name),
    log: createJobLog(job),
  };

  async function spawn(child: SpawnRequest, ordinal: string) {
    // A cancelled or paused parent spawns nothing more (its handler may not have noticed yet).
    signal.throwIfAborted();
    const target = deps.registry.get(child.handler_name);
    if (!target) {
      throw new PermanentError(
        `Cannot spawn "${child.handler_name}": no such handler`,
        "validation_error",
      );
    }
    const checked = target.payload.safeParse(child.payload);
    if (!checked.success) {
      throw new PermanentError(
        `Cannot spawn "${child.handler_name}": payload invalid (${
          checked.error.issues[0]?.message
        })`,
        "validation_error",
      );
    }
    const size = payloadBytes(checked.data);
    if (size > MAX_PAYLOAD_BYTES) {
      throw new PermanentError(
        `Cannot spawn "${child.handler_name}": payload is ${size} bytes; the limit is ${MAX_PAYLOAD_BYTES}`,
        "validation_error",
      );
    }
    const [r] = await store.jobs.insert([{
      handler_name: child.handler_name,
      payload: checked.data,
      source: child.source ?? "",
      queue: child.queue ?? job.queue,
      cost_estimate: child.cost_estimate ?? 0,
      parent_job_id: job.id,
      total: child.total ?? 0,
      priority: job.priority,
      spawn_key: child.key ?? ordinal,
    }]);
    if (!r.ok) throw new Error(r.message);
    if (r.created) deps.wake();
    return { id: r.job.id, created: r.created };
  }
}

/** Thrown into a handler by `ctx.pulse.call` when the governor refuses the call. */
export class CallRefused extends Error {
  constructor(readonly reason: string) {
    super(`Call refused (${reason}): the job is paused and resumes by itself when room appears`);
    this.name = "CallRefused";
  }
}
