/**
 * Assembles one Pulse instance from a KV handle and a handler registry: store, pool, service
 * and the Hono app. Opens nothing and listens on nothing (that is `main.ts`), so tests build
 * as many instances over one `Deno.Kv` as they like.
 *
 * @module
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import { createApp, createService } from "./api/mod.ts";
import { type Clock, systemClock } from "./clock.ts";
import type { Registry } from "./handlers/mod.ts";
import { createStore, type RetentionAges, type Store } from "./store/mod.ts";
import type { Limits } from "./types.ts";
import { createPool, type Pool } from "./workers/mod.ts";

export interface PulseOptions {
  kv: Deno.Kv;
  registry: Registry;
  clock?: Clock;
  prefix?: string;
  workers?: number;
  poll_interval_ms?: number;
  lease_ms?: number;
  stop_timeout_ms?: number;
  graceful_start_phase_ms?: number;
  /** Finished jobs older than this (ms, per status) are pruned; null keeps them. */
  retention?: RetentionAges;
  /** Limits until some are stored in KV (the environment seeds them). */
  limits?: Limits;
  /** Bearer token every /api/ route requires (PULSE_API_TOKEN). */
  token?: string;
  /** Lease owner name of this instance's pool; unique by default. */
  owner?: string;
  random?: () => number;
}

export interface Pulse {
  app: OpenAPIHono;
  store: Store;
  pool: Pool;
  start(): void;
  stop(): Promise<void>;
}

/**
 * @example
 * ```ts ignore
 * const kv = await Deno.openKv(":memory:");
 * const pulse = createPulse({ kv, registry: createRegistry([myHandler]) });
 * pulse.start();
 * const res = await pulse.app.request("/api/pulse/jobs", { method: "POST", body: ... });
 * await pulse.stop();
 * kv.close();
 * ```
 */
export function createPulse(o: PulseOptions): Pulse {
  const clock = o.clock ?? systemClock;
  const store = createStore({
    kv: o.kv,
    prefix: [o.prefix ?? "pulse"],
    now: () => clock.now(),
    limits: o.limits,
  });
  const pool = createPool({
    store,
    registry: o.registry,
    clock,
    owner: o.owner ?? `${Deno.hostname()}:${Deno.pid}:${crypto.randomUUID().slice(0, 8)}`,
    workers: o.workers ?? 4,
    poll_interval_ms: o.poll_interval_ms ?? 1000,
    lease_ms: o.lease_ms ?? 15_000,
    stop_timeout_ms: o.stop_timeout_ms ?? 10_000,
    graceful_start_phase_ms: o.graceful_start_phase_ms ?? 0,
    retention: o.retention,
    random: o.random,
  });
  const service = createService({
    store,
    registry: o.registry,
    clock,
    notify: (what, ids = []) => what === "wake" ? pool.wake() : void pool.taken(ids),
  });
  const app = createApp({
    store,
    registry: o.registry,
    service,
    pool: () => pool.status(),
    wake: () => pool.wake(),
    token: o.token,
  });
  return { app, store, pool, start: () => pool.start(), stop: () => pool.stop() };
}
