/**
 * The control API: a Hono app with every route declared through @hono/zod-openapi, one error
 * mapping, and the OpenAPI document at /api/pulse/openapi.json.
 *
 * @module
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { timingSafeEqual } from "hono/utils/buffer";
import { PulseError } from "../errors.ts";
import type { Registry } from "../handlers/mod.ts";
import type { Store } from "../store/mod.ts";
import { errorBody, onError, validationHook } from "./errors.ts";
import { addBudgetRoutes } from "./routes_budget.ts";
import { addJobRoutes } from "./routes_jobs.ts";
import { addSystemRoutes, type PoolStatus } from "./routes_system.ts";
import type { Service } from "./service.ts";

export { createService } from "./service.ts";
export type { Service, ServiceDeps } from "./service.ts";
export type { PoolStatus } from "./routes_system.ts";

/** Largest request body accepted by the single-job routes. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** Largest body of `POST /api/pulse/jobs/batch`. */
export const MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024;

export interface AppDeps {
  store: Store;
  registry: Registry;
  service: Service;
  pool: () => PoolStatus;
  /** Wakes this instance's pool (a limit changed, the queue resumed). */
  wake: () => void;
  /** When set, every /api/ route requires `Authorization: Bearer <token>`. */
  token?: string;
}

/**
 * Builds the Hono app. Tests call `app.request(...)` on it directly.
 *
 * @example
 * ```ts ignore
 * const app = createApp({ store, registry, service, pool: () => pool.status() });
 * const res = await app.request("/api/pulse/stats");
 * ```
 */
export function createApp(d: AppDeps): OpenAPIHono {
  const app = new OpenAPIHono({ defaultHook: validationHook });
  app.onError(onError);
  app.notFound((c) =>
    c.json(errorBody("not_found", `No route ${c.req.method} ${c.req.path}`), 404)
  );
  if (d.token) {
    const expected = `Bearer ${d.token}`;
    app.use("/api/*", async (c, next) => {
      // Hashes both sides before comparing, so the time taken says nothing about the token.
      // The scheme is case-insensitive (RFC 9110); the token is compared exactly.
      const given = (c.req.header("authorization") ?? "").replace(/^bearer /i, "Bearer ");
      if (!(await timingSafeEqual(expected, given))) {
        throw new PulseError(
          "unauthorized",
          "Send the header Authorization: Bearer <PULSE_API_TOKEN>",
        );
      }
      await next();
    });
  }
  const limit = (maxSize: number) =>
    bodyLimit({
      maxSize,
      onError: () => {
        throw new PulseError("payload_too_large", `Request body is over ${maxSize} bytes`);
      },
    });
  const small = limit(MAX_BODY_BYTES);
  const large = limit(MAX_BATCH_BODY_BYTES);
  app.use("/api/*", (c, next) => (c.req.path === "/api/pulse/jobs/batch" ? large : small)(c, next));
  app.use("/api/*", refuseUnexpectedBody);
  addJobRoutes(app, d.service, d.store);
  addSystemRoutes(app, d.store, d.registry, d.pool);
  addBudgetRoutes(app, d.store, d.wake);
  app.doc31("/api/pulse/openapi.json", {
    openapi: "3.1.0",
    info: { title: "Pulse control API", version: "0.1.0" },
  });
  return app;
}

/** The routes that read a JSON body; every other route takes none. */
const BODY_ROUTES = new Set([
  "POST /api/pulse/jobs",
  "POST /api/pulse/jobs/batch",
  "PUT /api/pulse/budget",
]);

/**
 * A body sent to a route that takes none is refused (400), as unknown fields are elsewhere: a
 * client that believes it passed options must not be ignored. An empty body or `{}` is fine.
 */
const refuseUnexpectedBody: MiddlewareHandler = async (c, next) => {
  if (c.req.method === "GET" || BODY_ROUTES.has(`${c.req.method} ${c.req.path}`)) return next();
  const text = (await c.req.text()).trim();
  if (text && text !== "{}") {
    let fields: string[] = [];
    try {
      const body = JSON.parse(text);
      if (body && typeof body === "object" && !Array.isArray(body)) fields = Object.keys(body);
    } catch { /* not JSON: refused below all the same */ }
    throw new PulseError(
      "validation_error",
      `${c.req.method} ${c.req.path} takes no request body`,
      fields.length
        ? fields.map((f) => ({ path: f, message: "Unknown field: this route takes no body" }))
        : [{ path: "body", message: "This route takes no body" }],
    );
  }
  await next();
};
