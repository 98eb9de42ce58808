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
    const allow = Deno.env.get("PULSE_HTTP_ALLOW");
    checkAllowed(new URL(url), allow);
    const init: RequestInit = { method, headers: { ...headers }, redirect: "manual" };
    if (body !== undefined) {
      init.body = typeof body === "string" ? body : JSON.stringify(body);
      if (typeof body !== "string") {
        init.headers = { "content-type": "application/json", ...headers };
      }
    }
    try {
      new Request(url, init); // bad headers, a body on GET…: refused before any money moves
    } catch (err) {
      throw new PermanentError(
        `Cannot build the request: ${(err as Error).message}`,
        "validation_error",
      );
    }
    await ctx.pulse.call({ cost_usd });
    // Every redirect hop is another request to a provider: admitted like the first (no cost).
    const res = await follow(url, init, allow, ctx.signal, () => ctx.pulse.call({ cost_usd: 0 }));
    await ctx.recordCost(cost_usd); // the provider answered: the call counts as spent
    const text = await res.text();
    if (res.status === 429 || res.status >= 500) {
      const wait = retryAfterMs(res.headers.get("retry-after"), Date.now());
      throw new RetryableStatus(
        `HTTP ${res.status} from ${method} ${url}`,
        wait === undefined ? undefined : Math.min(wait, MAX_RETRY_AFTER_MS),
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

/** Longest wait a `Retry-After` may impose (a server cannot park a job for years). */
export const MAX_RETRY_AFTER_MS = 3_600_000;
const MAX_REDIRECTS = 5;

/**
 * Fetches, following redirects by hand: every hop passes the allowlist and is admitted by
 * `admit` (the rate limit), since each is one more request to a provider.
 */
async function follow(
  url: string,
  init: RequestInit,
  allow: string | undefined,
  signal: AbortSignal,
  admit: () => Promise<void>,
) {
  let target = new URL(url);
  let request: RequestInit = { ...init, signal };
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const res = await fetch(target, request);
    const location = res.headers.get("location");
    if (res.status < 300 || res.status >= 400 || !location) return res;
    await res.body?.cancel();
    target = new URL(location, target);
    if (!/^https?:$/.test(target.protocol)) {
      throw new PermanentError(`Redirect to "${target.protocol}" refused`, "validation_error");
    }
    checkAllowed(target, allow);
    await admit();
    // 303 (and 301/302 after POST, as browsers do) continue as GET without a body.
    if (
      res.status === 303 || ((res.status === 301 || res.status === 302) && init.method === "POST")
    ) {
      request = { ...request, method: "GET", body: undefined };
    }
  }
  throw new PermanentError(`More than ${MAX_REDIRECTS} redirects from ${url}`, "network_error");
}

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
