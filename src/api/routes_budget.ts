/**
 * Governor routes: the budget and rate view, changes to the limits, whole-queue pause/resume.
 *
 * @module
 */
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { z } from "zod";
import { budgetState, isTimeZone } from "../pulse/mod.ts";
import type { Store } from "../store/mod.ts";
import { BudgetState, Limits } from "../types.ts";

/** Any subset of the limits; `null` clears a limit. Unknown fields are refused. */
const LimitsPatch = z.strictObject({
  max_calls_per_minute: Limits.shape.max_calls_per_minute.optional(),
  daily_budget_usd: Limits.shape.daily_budget_usd.optional(),
  monthly_budget_usd: Limits.shape.monthly_budget_usd.optional(),
  pause_on_budget: z.boolean().optional(),
  time_zone: z.string().refine(isTimeZone, "Unknown IANA time zone").optional(),
  handler_limits: Limits.shape.handler_limits.optional(),
});

const ok = <T extends z.ZodType>(schema: T, description: string) => ({
  200: { content: { "application/json": { schema } }, description },
});

export function addBudgetRoutes(app: OpenAPIHono, store: Store, wake: () => void) {
  const view = async () => budgetState(await store.governor.snapshot());

  app.openapi(
    createRoute({
      method: "get",
      path: "/api/pulse/budget",
      summary: "Limits, spend, reservations and the rate window of this moment",
      responses: ok(BudgetState, "The budget view"),
    }),
    async (c) => c.json(await view(), 200),
  );

  app.openapi(
    createRoute({
      method: "put",
      path: "/api/pulse/budget",
      summary: "Change any subset of the limits (effective for the next admission)",
      request: {
        body: { content: { "application/json": { schema: LimitsPatch } }, required: true },
      },
      responses: {
        ...ok(BudgetState, "The budget view after the change"),
        400: { description: "A negative, non-numeric or unknown value, or an unknown time zone" },
      },
    }),
    async (c) => {
      await store.governor.setLimits(c.req.valid("json"));
      wake();
      return c.json(await view(), 200);
    },
  );

  for (const action of ["pause", "resume"] as const) {
    app.openapi(
      createRoute({
        method: "post",
        path: `/api/pulse/${action}`,
        summary: action === "pause"
          ? "Stop admitting jobs (they stay queued; running jobs go on)"
          : "Admit jobs again",
        responses: ok(BudgetState, "The budget view, with queue_paused"),
      }),
      async (c) => {
        await store.governor.setQueuePaused(action === "pause");
        wake();
        return c.json(await view(), 200);
      },
    );
  }
}
