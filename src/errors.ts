/**
 * Errors with stable codes. `src/api` maps each code to an HTTP status in one place; handlers
 * throw {@link PermanentError} to fail a job without retry.
 *
 * @module
 */
import type { ErrorCode, ErrorContext } from "./types.ts";

/** Codes of errors the API answers with (DESIGN "HTTP contract"). */
export type PulseErrorCode =
  | "validation_error"
  | "unauthorized"
  | "not_found"
  | "invalid_transition"
  | "conflict"
  | "payload_too_large"
  | "unknown_handler"
  | "unknown_parent"
  | "internal";

export interface Issue {
  path: string;
  message: string;
}

/** An error a user of the API sees, with a stable code. */
export class PulseError extends Error {
  constructor(
    readonly code: PulseErrorCode,
    message: string,
    readonly issues?: Issue[],
  ) {
    super(message);
    this.name = "PulseError";
  }
}

/**
 * Thrown by a handler to fail its job at once, without retry.
 *
 * @example
 * ```ts
 * import { PermanentError } from "./errors.ts";
 * throw new PermanentError('Cannot import "x.xml": unsupported format', "validation_error");
 * ```
 */
export class PermanentError extends Error {
  constructor(message: string, readonly code: ErrorCode = "unknown") {
    super(message);
    this.name = "PermanentError";
  }
}

/** Codes whose errors never succeed on retry (the seed's classifier). */
const NOT_RETRYABLE: ReadonlySet<ErrorCode> = new Set([
  "validation_error",
  "parse_error",
  "file_not_found",
]);

/**
 * Longest error message kept, in bytes as KV stores it: a string with any character past
 * U+00FF is stored two bytes per character, so it keeps half as many. A message lives in the
 * job record twice (`error`, `error_context.message`) and in its history: a longer one is cut,
 * saying how much was cut.
 */
export const MAX_MESSAGE_BYTES = 2048;

/** `message` cut to MAX_MESSAGE_BYTES as stored. */
export function boundMessage(message: string, maxBytes = MAX_MESSAGE_BYTES): string {
  // deno-lint-ignore no-control-regex
  const keep = /[^\u0000-\u00ff]/.test(message) ? maxBytes >> 1 : maxBytes;
  if (message.length <= keep) return message;
  // Never cut between the two halves of a surrogate pair; the suffix is ASCII so that a
  // Latin-1 message stays one byte per character.
  const end = /[\ud800-\udbff]/.test(message[keep - 1]) ? keep - 1 : keep;
  return `${message.slice(0, end)}... (${message.length - end} more characters)`;
}

/**
 * KV refused a value over 64 KiB (or a commit over its limits), e.g. a job record an earlier
 * version wrote that no longer fits once read back.
 */
export const isTooLarge = (err: unknown): boolean =>
  err instanceof TypeError && /too large/i.test(err.message);

/** Pure: classify a thrown value into the seed's ErrorContext. */
export function classifyError(err: unknown, stage: string): ErrorContext {
  const message = boundMessage(err instanceof Error ? err.message : String(err));
  if (err instanceof PermanentError) {
    return { stage, code: err.code, message, retryable: false, recoverable: false };
  }
  const code = codeOf(err);
  const retryable = !NOT_RETRYABLE.has(code);
  return { stage, code, message, retryable, recoverable: retryable };
}

function codeOf(err: unknown): ErrorCode {
  if (!(err instanceof Error)) return "unknown";
  const explicit = (err as { code?: unknown }).code;
  if (typeof explicit === "string" && isErrorCode(explicit)) return explicit;
  if (err instanceof Deno.errors.NotFound) return "file_not_found";
  // KV refuses a value over 64 KiB or a commit over its limits: the same write fails every time.
  if (isTooLarge(err)) return "validation_error";
  if (err instanceof Deno.errors.IsADirectory) return "file_not_found";
  if (err.name === "ZodError") return "validation_error";
  if (err instanceof SyntaxError) return "parse_error";
  if (err.name === "TimeoutError" || err instanceof Deno.errors.TimedOut) return "timeout";
  if (
    err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.Http ||
    (err instanceof TypeError && /fetch|network/i.test(err.message))
  ) return "network_error";
  return "unknown";
}

function isErrorCode(s: string): s is ErrorCode {
  return [
    "ai_error",
    "database_error",
    "file_not_found",
    "network_error",
    "parse_error",
    "timeout",
    "unknown",
    "validation_error",
  ].includes(s);
}
