/**
 * `http.request`: one HTTP request per attempt, admitted by the governor with its cost.
 * 429 and 5xx are retried (honouring `Retry-After`), other 4xx fail at once. An optional host
 * allowlist `PULSE_HTTP_ALLOW` (comma-separated `host` or `host:port`; unset = every host).
 *
 * @module
 */
import { defineHandler, PermanentError, z } from "../../src/mod.ts";

/** Bytes of the response body kept in the job's result; the rest is cut (`truncated: true`). */
export const MAX_BODY_CHARS = 16 * 1024;

const payload = z.strictObject({
  url: z.url({ protocol: /^https?$/ }),
  method: z.enum(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]).default("GET"),
  headers: z.record(z.string(), z.string()).optional(),
  /** A string is sent as it is; any other JSON value is sent as JSON. */
  body: z.unknown().optional(),
  cost_usd: z.number().nonnegative().max(1e6).default(0),
});

/** An HTTP status that may succeed later; `retry_after_ms` comes from `Retry-After`. */
class RetryableStatus extends Error {
  readonly code = "network_error";
  constructor(message: string, readonly retry_after_ms?: number) {
    super(message);
  }
}

export default defineHandler({
  name: "http.request",
  description: "Sends one HTTP request per attempt under the rate limit and budget",
  payload,
  estimateCost: (p) => p.cost_usd ?? 0,
  async run(ctx) {
    const { url, method, headers, body, cost_usd } = ctx.payload;
    checkAllowed(new URL(url), Deno.env.get("PULSE_HTTP_ALLOW"));
    await ctx.pulse.call({ cost_usd });
    const init: RequestInit = { method, headers: { ...headers }, signal: ctx.signal };
    if (body !== undefined) {
      init.body = typeof body === "string" ? body : JSON.stringify(body);
      if (typeof body !== "string") {
        init.headers = { "content-type": "application/json", ...headers };
      }
    }
    let res: Response;
    try {
      res = await fetch(url, init);
    } finally {
      await ctx.recordCost(cost_usd); // the call was made: its cost is spent whatever came back
    }
    const text = await res.text();
    if (res.status === 429 || res.status >= 500) {
      throw new RetryableStatus(
        `HTTP ${res.status} from ${method} ${url}`,
        retryAfterMs(res.headers.get("retry-after"), Date.now()),
      );
    }
    if (res.status >= 400) {
      throw new PermanentError(
        `HTTP ${res.status} from ${method} ${url}: ${text.slice(0, 200)}`,
        "network_error",
      );
    }
    return {
      status: res.status,
      headers: Object.fromEntries(res.headers),
      body: text.slice(0, MAX_BODY_CHARS),
      truncated: text.length > MAX_BODY_CHARS,
    };
  },
});

function checkAllowed(url: URL, allow: string | undefined) {
  if (!allow?.trim()) return;
  const hosts = allow.split(",").map((h) => h.trim().toLowerCase()).filter(Boolean);
  if (hosts.includes(url.hostname.toLowerCase()) || hosts.includes(url.host.toLowerCase())) return;
  throw new PermanentError(`Host "${url.host}" is not in PULSE_HTTP_ALLOW`, "validation_error");
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date; undefined when absent/bad. */
export function retryAfterMs(value: string | null, now: number): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
