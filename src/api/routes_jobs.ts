/**
 * Job routes under /api/pulse, declared once with @hono/zod-openapi so validation and the
 * OpenAPI document come from the same zod schemas.
 *
 * @module
 */
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { z } from "zod";
import type { Store } from "../store/mod.ts";
import { EnqueueRequest, Job, JobEvent, JobId, JobStatus } from "../types.ts";
import { PulseError } from "../errors.ts";
import { MAX_BATCH_JOBS, type Service, type Verb } from "./service.ts";

const ErrorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  }),
});
const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});
const errors = {
  400: json(ErrorBody, "Invalid request"),
  404: json(ErrorBody, "Job not found"),
  409: json(ErrorBody, "Refused by the lifecycle, or lost a race"),
};
const IdParam = z.object({ id: JobId });
const Limit = z.coerce.number().int().min(1).max(1000).default(50);
const ListQuery = z.strictObject({
  status: JobStatus.optional(),
  handler_name: z.string().min(1).max(200).optional(),
  queue: z.string().min(1).max(100).optional(),
  parent_job_id: JobId.optional(),
  limit: Limit,
  cursor: JobId.optional(),
});
const PageQuery = z.strictObject({ limit: Limit, cursor: JobId.optional() });
const JobPage = z.object({ jobs: z.array(Job), next_cursor: z.string().nullable() });

export function addJobRoutes(app: OpenAPIHono, service: Service, store: Store) {
  app.openapi(
    createRoute({
      method: "post",
      path: "/api/pulse/jobs",
      summary: "Enqueue a job (deduplicated by handler_name + source while active)",
      request: {
        body: { content: { "application/json": { schema: EnqueueRequest } }, required: true },
      },
      responses: {
        200: json(Job, "An active job with the same handler_name and source already exists"),
        201: json(Job, "Created"),
        ...errors,
        413: json(ErrorBody, "Payload too large"),
        422: json(ErrorBody, "Unknown handler or parent"),
      },
    }),
    async (c) => {
      const { job, created } = await service.enqueue(c.req.valid("json"));
      const shown = await service.present(job);
      return created ? c.json(shown, 201) : c.json(shown, 200);
    },
  );

  // Too many jobs is 413 whatever the items hold: counted before they are validated, on the
  // body Hono parses once and keeps for the validator.
  app.use("/api/pulse/jobs/batch", async (c, next) => {
    const body = c.req.method === "POST" ? await c.req.json().catch(() => null) : null;
    const n = Array.isArray(body?.jobs) ? body.jobs.length : 0;
    if (n > MAX_BATCH_JOBS) {
      throw new PulseError(
        "payload_too_large",
        `Batch has ${n} jobs; the limit is ${MAX_BATCH_JOBS}`,
      );
    }
    await next();
  });
  app.openapi(
    createRoute({
      method: "post",
      path: "/api/pulse/jobs/batch",
      summary: "Enqueue up to 10,000 jobs (validated all-or-nothing; dedup per item)",
      request: {
        body: {
          content: {
            "application/json": {
              schema: z.strictObject({ jobs: z.array(EnqueueRequest).min(1) }),
            },
          },
          required: true,
        },
      },
      responses: {
        200: json(
          z.object({ jobs: z.array(z.object({ job: Job, created: z.boolean() })) }),
          "One entry per job, in order",
        ),
        ...errors,
        413: json(ErrorBody, "Over 10,000 jobs or 16 MiB"),
        422: json(ErrorBody, "Unknown handler or parent"),
      },
    }),
    async (c) => {
      const results = await service.enqueueBatch(c.req.valid("json").jobs);
      const shown = await service.present(results.map((r) => r.job));
      return c.json({ jobs: results.map((r, i) => ({ job: shown[i], created: r.created })) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/api/pulse/jobs",
      summary: "List jobs, oldest first",
      request: { query: ListQuery },
      responses: { 200: json(JobPage, "A page of jobs"), ...errors },
    }),
    async (c) => {
      const { limit, cursor, ...filter } = c.req.valid("query");
      const page = await store.jobs.list(filter, limit, cursor);
      return c.json({ ...page, jobs: await service.present(page.jobs) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/api/pulse/jobs/{id}",
      request: { params: IdParam },
      responses: { 200: json(Job, "The job"), ...errors },
    }),
    async (c) => c.json(await service.present(await service.get(c.req.valid("param").id)), 200),
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/api/pulse/jobs/{id}/children",
      request: { params: IdParam, query: PageQuery },
      responses: { 200: json(JobPage, "A page of the job's children"), ...errors },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { limit, cursor } = c.req.valid("query");
      await service.get(id);
      const page = await store.jobs.list({ parent_job_id: id }, limit, cursor);
      return c.json({ ...page, jobs: await service.present(page.jobs) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/api/pulse/jobs/{id}/events",
      summary: "The job's history: every transition with time and reason",
      request: { params: IdParam },
      responses: { 200: json(z.object({ events: z.array(JobEvent) }), "The history"), ...errors },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      await service.get(id);
      return c.json({ events: await store.jobs.events(id) }, 200);
    },
  );

  for (const verb of ["pause", "resume", "cancel", "retry"] as const satisfies readonly Verb[]) {
    app.openapi(
      createRoute({
        method: "post",
        path: `/api/pulse/jobs/{id}/${verb}`,
        summary: `Apply "${verb}" to the job`,
        request: { params: IdParam },
        responses: { 200: json(Job, "The job with its new status"), ...errors },
      }),
      async (c) =>
        c.json(await service.present(await service.act(c.req.valid("param").id, verb)), 200),
    );
  }

  app.openapi(
    createRoute({
      method: "delete",
      path: "/api/pulse/jobs/{id}",
      summary: "Cancel the job if active, cancel its active children, remove the job",
      request: { params: IdParam },
      responses: {
        200: json(
          z.object({ deleted: z.boolean(), cancelled_children: z.number().int() }),
          "Removed",
        ),
        ...errors,
      },
    }),
    async (c) => c.json(await service.remove(c.req.valid("param").id), 200),
  );
}
