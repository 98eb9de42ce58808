/**
 * The job lifecycle as one XState v5 machine: DESIGN.md's table, and nothing else.
 *
 * The machine decides; it is only ever used through the pure `transition()` (see `next.ts`),
 * never as a running actor, so no timer lives in it and retry delays come back as data
 * (`run_at`). Each transition names the record changes it makes (actions such as "record_error",
 * "to_queued"); what each named change does to the job record is written in `patches.ts`.
 *
 * @module
 */
import { setup } from "xstate";
import type { ErrorContext, Job, Lease, PauseReason } from "../types.ts";

/** Retries allowed after the first attempt (seed: "max 2"). */
export const MAX_RETRIES = 2;

type At = { now: number; reason?: string };
/** Events are lowercase verbs, the same words as the API routes. */
export type JobEvent =
  | At & { type: "claim"; lease: Lease }
  | At & { type: "complete"; result?: unknown; cost_actual?: number }
  | At & { type: "fail"; error_context: ErrorContext; backoff_ms: number; cost_actual?: number }
  | At & { type: "expire"; backoff_ms: number }
  | At & { type: "requeue" }
  | At & { type: "pause"; pause_reason: PauseReason }
  | At & { type: "resume" }
  | At & { type: "cancel" }
  | At & { type: "retry" };
export type JobEventType = JobEvent["type"];
export const JOB_EVENT_TYPES: readonly JobEventType[] = [
  "claim",
  "complete",
  "fail",
  "expire",
  "requeue",
  "pause",
  "resume",
  "cancel",
  "retry",
];

/** Names of the record changes; `patches.ts` implements each. */
export const PATCH_NAMES = [
  "start",
  "finish",
  "record_error",
  "to_failed",
  "to_queued_after_backoff",
  "to_queued_now",
  "unpause",
  "pause",
  "cancel",
  "reset_retries",
] as const;
export type PatchName = (typeof PATCH_NAMES)[number];

type Ctx = { job: Job };

/** Pure guard: another attempt is allowed (retries left, and the error is retryable). */
export function canRetry(job: Pick<Job, "retry_count">, event: JobEvent): boolean {
  return job.retry_count < MAX_RETRIES && (event.type !== "fail" || event.error_context.retryable);
}

// The actions are markers: the pure transition() returns them as data and never runs them.
const marker = () => {};
const actions = Object.fromEntries(PATCH_NAMES.map((n) => [n, marker])) as Record<
  PatchName,
  () => void
>;

/** The lifecycle table of DESIGN.md; any pair not listed here is refused. */
export const jobMachine = setup({
  types: {} as { context: Ctx; events: JobEvent; input: Ctx },
  guards: { canRetry: ({ context, event }) => canRetry(context.job, event) },
  actions,
}).createMachine({
  id: "job",
  context: ({ input }) => input,
  initial: "queued",
  states: {
    queued: {
      on: {
        claim: { target: "running", actions: "start" },
        fail: { target: "failed", actions: ["record_error", "to_failed"] },
        pause: { target: "paused", actions: "pause" },
        cancel: { target: "cancelled", actions: "cancel" },
      },
    },
    running: {
      on: {
        complete: { target: "completed", actions: "finish" },
        fail: [
          {
            guard: "canRetry",
            target: "queued",
            actions: ["record_error", "to_queued_after_backoff"],
          },
          { target: "failed", actions: ["record_error", "to_failed"] },
        ],
        expire: [
          {
            guard: "canRetry",
            target: "queued",
            actions: ["record_error", "to_queued_after_backoff"],
          },
          { target: "failed", actions: ["record_error", "to_failed"] },
        ],
        requeue: { target: "queued", actions: "to_queued_now" },
        pause: { target: "paused", actions: "pause" },
        cancel: { target: "cancelled", actions: "cancel" },
      },
    },
    paused: {
      on: {
        resume: { target: "queued", actions: ["unpause", "to_queued_now"] },
        cancel: { target: "cancelled", actions: "cancel" },
      },
    },
    failed: {
      on: { retry: { target: "queued", actions: "reset_retries" } },
    },
    completed: { type: "final" },
    cancelled: { type: "final" },
  },
});
