/**
 * What the job routes do, apart from HTTP: enqueue (validated against the handler), the
 * lifecycle verbs, and delete. Every failure is a PulseError with its code.
 *
 * @module
 */
import type { Clock } from "../clock.ts";
import { isTooLarge, PulseError, type PulseErrorCode } from "../errors.ts";
import type { Registry } from "../handlers/mod.ts";
import {
  MAX_PAYLOAD_BYTES,
  type NewJob,
  type Outcome,
  payloadBytes,
  type RefusalCode,
  type Store,
} from "../store/mod.ts";
import { budgetState, pulseStateOf } from "../pulse/mod.ts";
import { depthOver, MAX_DEPTH as MAX_PAYLOAD_DEPTH } from "../types.ts";
import type { EnqueueRequest, Job } from "../types.ts";
import { issuesOf } from "./errors.ts";

export interface ServiceDeps {
  store: Store;
  registry: Registry;
  clock: Clock;
  /** Tells this instance's pool: new work (wake) or a running job taken away (control). */
  notify: (what: "wake" | "control", ids?: readonly string[]) => void;
}

/** Largest payload accepted, serialised (a job record must fit one 64 KiB KV value). */

/** Most jobs in one `POST /api/pulse/jobs/batch`. */
export const MAX_BATCH_JOBS = 10_000;

export type Verb = "pause" | "resume" | "cancel" | "retry";

export function createService(d: ServiceDeps) {
  /** Validates one request into a NewJob; throws 400/413/422 PulseErrors. */
  function prepare(req: EnqueueRequest): NewJob {
    const handler = d.registry.get(req.handler_name);
    if (!handler) {
      throw new PulseError("unknown_handler", `Unknown handler "${req.handler_name}"`);
    }
    if (req.source !== undefined && !req.source.isWellFormed()) {
      // KV writes a lone surrogate in a key as U+FFFD: two such sources would share one dedup key.
      throw new PulseError("validation_error", "Request is invalid", [
        { path: "source", message: "Must be well-formed Unicode (no lone surrogates)" },
      ]);
    }
    if (depthOver(req.payload, MAX_PAYLOAD_DEPTH)) {
      throw new PulseError("validation_error", "Request is invalid", [
        { path: "payload", message: `Nested deeper than ${MAX_PAYLOAD_DEPTH} levels` },
      ]);
    }
    const parsed = handler.payload.safeParse(req.payload);
    if (!parsed.success) {
      throw new PulseError(
        "validation_error",
        `Payload is invalid for handler "${handler.name}"`,
        issuesOf(parsed.error, "payload."),
      );
    }
    const size = payloadBytes(req.payload);
    if (size > MAX_PAYLOAD_BYTES) {
      throw new PulseError(
        "payload_too_large",
        `Payload is ${size} bytes; the limit is ${MAX_PAYLOAD_BYTES}`,
      );
    }
    let estimate = 0;
    try {
      estimate = handler.estimateCost?.(parsed.data) ?? 0;
    } catch {
      estimate = 0; // an estimator that throws does not block enqueue
    }
    return {
      handler_name: handler.name,
      payload: req.payload,
      source: req.source ?? "",
      queue: req.queue ?? "default",
      cost_estimate: Math.max(req.cost_estimate ?? 0, Number.isFinite(estimate) ? estimate : 0),
      parent_job_id: req.parent_job_id,
      total: req.total ?? 0,
      priority: req.priority ?? 0,
      run_at: req.run_at ? Date.parse(req.run_at) : undefined,
    };
  }

  async function enqueue(req: EnqueueRequest): Promise<{ job: Job; created: boolean }> {
    const [r] = await d.store.jobs.insert([prepare(req)]);
    if (!r.ok) throw new PulseError(r.code, r.message);
    if (r.created) d.notify("wake");
    return r;
  }

  /**
   * All-or-nothing validation of every item (issues under `jobs.<i>.…`), then one insert of all,
   * committed in chunks within KV's limits; deduplication applies per item.
   */
  async function enqueueBatch(reqs: EnqueueRequest[]) {
    if (reqs.length > MAX_BATCH_JOBS) {
      throw new PulseError(
        "payload_too_large",
        `Batch has ${reqs.length} jobs; the limit is ${MAX_BATCH_JOBS}`,
      );
    }
    const prepared = reqs.map((req, i) => {
      try {
        return prepare(req);
      } catch (err) {
        if (!(err instanceof PulseError)) throw err;
        const issues = err.issues?.map((x) => ({ ...x, path: `jobs.${i}.${x.path}` }));
        throw new PulseError(err.code, `Job ${i}: ${err.message}`, issues);
      }
    });
    const parents = [
      ...new Set(prepared.map((p) => p.parent_job_id).filter((x): x is string => !!x)),
    ];
    const found = await d.store.jobs.getMany(parents);
    const missing = parents.find((_, i) => !found[i]);
    if (missing) throw new PulseError("unknown_parent", `Parent job "${missing}" not found`);
    const results = await d.store.jobs.insert(prepared);
    const stored = results.flatMap((r) => r.ok ? [{ job: r.job, created: r.created }] : []);
    if (stored.some((r) => r.created)) d.notify("wake");
    if (stored.length < results.length) {
      // A parent deleted while the batch's commits went in: the jobs before it are stored,
      // so say which were not rather than answer as if none were.
      const issues = results.flatMap((r, i) =>
        r.ok ? [] : [{ path: `jobs.${i}.parent_job_id`, message: `${r.message}: not stored` }]
      );
      throw new PulseError(
        "conflict",
        `${stored.length} of ${results.length} jobs were stored; ${issues.length} were not, their ` +
          "parent was deleted while the batch was stored (listed in issues)",
        issues,
      );
    }
    return stored;
  }

  async function get(id: string): Promise<Job> {
    const job = await d.store.jobs.get(id);
    if (!job) throw new PulseError("not_found", `Job "${id}" not found`);
    return job;
  }

  async function act(id: string, verb: Verb): Promise<Job> {
    const [r] = await d.store.transitions.apply([{ id, event: () => eventOf(verb) }]);
    return settle(r);
  }

  function eventOf(verb: Verb) {
    const now = d.clock.now();
    if (verb === "pause") return { type: verb, now, pause_reason: "user_requested" as const };
    return { type: verb, now, reason: `Requested through the API` };
  }

  function settle(r: Outcome): Job {
    if (!r.ok) throw new PulseError(CODE_OF[r.code], r.message);
    if (r.before.status === "running") d.notify("control", [r.job.id]);
    if (r.job.status === "queued") d.notify("wake");
    return r.job;
  }

  /** Cancels the job if active and its active children, then removes the job. */
  async function remove(id: string) {
    const job = await get(id);
    if (["queued", "running", "paused"].includes(job.status)) {
      await act(id, "cancel").catch(ignoreFinal);
    }
    let cancelled_children = 0;
    let cursor: string | undefined;
    do {
      const page = await d.store.jobs.list({ parent_job_id: id }, 50, cursor);
      const active = page.jobs.filter((j) => ["queued", "running", "paused"].includes(j.status));
      if (active.length) {
        const out = await d.store.transitions.apply(
          active.map((c) => ({ id: c.id, event: () => eventOf("cancel") })),
        );
        cancelled_children += out.filter((o) => o.ok).length;
        const stopped = out.flatMap((o) => o.ok && o.before.status === "running" ? [o.job.id] : []);
        if (stopped.length) d.notify("control", stopped);
      }
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    const deleted = await d.store.jobs.remove(id);
    return { deleted, cancelled_children };
  }

  /**
   * Jobs as the API shows them: PulseState filled from one snapshot of the governor's keys
   * (so every job read in one answer, and `GET /budget` at the same moment, agree).
   */
  async function present<T extends Job | Job[]>(jobs: T): Promise<T> {
    const b = budgetState(await d.store.governor.snapshot());
    // `history` is the store's (entries not yet in their own keys): GET …/events shows them.
    const one = ({ history: _, ...j }: Job): Job => ({ ...j, pulse_state: pulseStateOf(j, b) });
    return (Array.isArray(jobs) ? jobs.map(one) : one(jobs as Job)) as T;
  }

  return { prepare, enqueue, enqueueBatch, get, act, remove, present };
}

/** The API's error code for each refusal of the store. */
const CODE_OF = {
  not_found: "not_found",
  invalid_transition: "invalid_transition",
  conflict: "conflict",
  lease_lost: "conflict",
  too_large: "payload_too_large",
} as const satisfies Record<RefusalCode, PulseErrorCode>;

/**
 * A job that finished between our read and the cancel is simply removed, and so is one whose
 * record KV will no longer take back (removal writes no record).
 */
function ignoreFinal(err: unknown) {
  if (err instanceof PulseError && err.code === "invalid_transition") return;
  if (isTooLarge(err)) return;
  throw err;
}

export type Service = ReturnType<typeof createService>;
