/**
 * System routes: stats, metrics, handlers, health.
 *
 * @module
 */
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { z } from "zod";
import { describeHandler, type Registry } from "../handlers/mod.ts";
import type { Store } from "../store/mod.ts";
import { QueueStats, SystemMetrics } from "../types.ts";

export interface PoolStatus {
  state: string;
  workers_active: number;
  workers_total: number;
}

const GiB = 1024 ** 3;
const round = (n: number, places = 3) => Math.round(n * 10 ** places) / 10 ** places;
const ok = <T extends z.ZodType>(schema: T, description: string) => ({
  200: { content: { "application/json": { schema } }, description },
});

export function addSystemRoutes(
  app: OpenAPIHono,
  store: Store,
  registry: Registry,
  pool: () => PoolStatus,
) {
  app.openapi(
    createRoute({ method: "get", path: "/api/pulse/stats", responses: ok(QueueStats, "Counts") }),
    async (c) => c.json(await store.stats.read(), 200),
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/api/pulse/metrics",
      responses: ok(SystemMetrics, "Workers, memory of this machine, queue depth"),
    }),
    async (c) => {
      const stats = await store.stats.read();
      const mem = Deno.systemMemoryInfo();
      const used = mem.total - mem.available;
      const p = pool();
      return c.json({
        workers_active: p.workers_active,
        workers_total: p.workers_total,
        memory_used_gb: round(used / GiB),
        memory_total_gb: round(mem.total / GiB),
        memory_percent: round((100 * used) / mem.total, 1),
        jobs_queued: stats.queued,
        jobs_running: stats.running,
        process_rss_mib: round(Deno.memoryUsage().rss / 1024 ** 2, 1),
      }, 200);
    },
  );

  const HandlerInfo = z.object({
    name: z.string(),
    description: z.string(),
    payload_schema: z.unknown(),
  });
  app.openapi(
    createRoute({
      method: "get",
      path: "/api/pulse/handlers",
      responses: ok(
        z.object({
          handlers: z.array(HandlerInfo),
          errors: z.array(z.object({ path: z.string(), message: z.string() })),
        }),
        "Loaded handlers, and modules that failed to load",
      ),
    }),
    (c) =>
      c.json({ handlers: registry.list().map(describeHandler), errors: [...registry.errors] }, 200),
  );

  app.get("/healthz", (c) => {
    const state = pool().state;
    return state === "running"
      ? c.json({ status: "ok", pool: state }, 200)
      : c.json({ status: "unavailable", pool: state }, 503);
  });
}
