/**
 * One place that turns errors into HTTP answers: `{ "error": { code, message, issues? } }`.
 * Bad input is always a 4xx; anything unexpected is a 500 `internal` without a stack trace.
 *
 * @module
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ZodError } from "zod";
import { type Issue, isTooLarge, PulseError, type PulseErrorCode } from "../errors.ts";

const STATUS: Record<PulseErrorCode, ContentfulStatusCode> = {
  validation_error: 400,
  unauthorized: 401,
  not_found: 404,
  invalid_transition: 409,
  conflict: 409,
  payload_too_large: 413,
  unknown_handler: 422,
  unknown_parent: 422,
  internal: 500,
};

const CODE_OF_STATUS: Record<number, PulseErrorCode> = {
  400: "validation_error",
  401: "unauthorized",
  404: "not_found",
  413: "payload_too_large",
  415: "validation_error",
};

export function errorBody(code: PulseErrorCode, message: string, issues?: Issue[]) {
  return { error: { code, message, ...(issues?.length ? { issues } : {}) } };
}

/** Hono `onError`: maps PulseError and HTTPException; hides everything else behind 500. */
export function onError(err: Error, c: Context): Response {
  if (err instanceof PulseError) {
    return c.json(errorBody(err.code, err.message, err.issues), STATUS[err.code]);
  }
  if (err instanceof HTTPException && err.status < 500) {
    const code = CODE_OF_STATUS[err.status] ?? "validation_error";
    const message = err.status === 415
      ? "Send the body as JSON (Content-Type: application/json)"
      : err.message || "Bad request";
    return c.json(errorBody(code, message), err.status as ContentfulStatusCode);
  }
  if (isTooLarge(err)) {
    // A job record an earlier version wrote that KV will not take back: not the caller's fault,
    // but nothing this request can change either.
    const message = `The job's record no longer fits one KV value (${err.message})`;
    return c.json(errorBody("payload_too_large", message), 413);
  }
  console.error(`Unhandled error on ${c.req.method} ${c.req.path}:`, err);
  return c.json(errorBody("internal", "Internal error; see the server log"), 500);
}

/** Zod issues as the wire's `issues`, each path prefixed (e.g. "payload."). */
export function issuesOf(error: ZodError, prefix = ""): Issue[] {
  return error.issues.map((i) => ({
    path: `${prefix}${i.path.map(String).join(".")}`.replace(/\.$/, "") || "body",
    message: i.message,
  }));
}

/** `defaultHook` of every route: a failed zod validation becomes 400 `validation_error`. */
export function validationHook(
  result: { success: boolean; error?: unknown; target?: string },
  c: Context,
) {
  if (result.success) return;
  const where = result.target === "json" ? "" : `${result.target}.`;
  const issues = issuesOf(result.error as ZodError, where === "param." ? "" : where);
  return c.json(errorBody("validation_error", "Request is invalid", issues), 400);
}
