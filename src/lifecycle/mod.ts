/**
 * The job lifecycle: the XState machine of DESIGN.md's table and its pure decider `next`.
 *
 * @module
 */
export { JOB_EVENT_TYPES, jobMachine, MAX_RETRIES } from "./machine.ts";
export type { JobEvent, JobEventType } from "./machine.ts";
export { backoffMs, next } from "./next.ts";
export type { Decision } from "./next.ts";
