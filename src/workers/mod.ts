/**
 * The engine: the worker pool (dispatcher + worker actors) and the execution of one job.
 *
 * @module
 */
export { createPool } from "./pool.ts";
export type { Pool, PoolOptions } from "./pool.ts";
