/**
 * Configuration from environment variables (DESIGN "Configuration"), validated with zod.
 * Every name is documented in the README.
 *
 * @module
 */
import { z } from "zod";
import type { Limits } from "./types.ts";

const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);
const DAY = 24 * 3600 * 1000;
/** A retention age in ms, or "never" (null: keep). */
const age = (def: number) =>
  z.union([z.literal("never").transform(() => null), z.coerce.number().int().min(0)]).default(def);
const optionalText = z.string().trim().min(1).optional().catch(undefined);

const Env = z.object({
  PORT: int(8000, 0).pipe(z.number().max(65535)),
  PULSE_HOST: optionalText,
  PULSE_KV_PATH: optionalText,
  PULSE_KV_URL: optionalText,
  PULSE_KV_PREFIX: z.string().trim().min(1).default("pulse"),
  PULSE_API_TOKEN: optionalText,
  PULSE_HANDLERS_DIR: z.string().trim().min(1).default("./handlers"),
  PULSE_IMPORT_ROOT: optionalText,
  PULSE_WORKERS: int(4, 1).pipe(z.number().max(1000)),
  PULSE_POLL_INTERVAL_MS: int(1000, 1),
  PULSE_GRACEFUL_START_PHASE_MS: int(10_000),
  PULSE_STOP_TIMEOUT_MS: int(10_000),
  PULSE_LEASE_MS: int(15_000, 100),
  PULSE_RETENTION_COMPLETED_MS: age(7 * DAY),
  PULSE_RETENTION_FAILED_MS: age(30 * DAY),
  PULSE_RETENTION_CANCELLED_MS: age(7 * DAY),
  PULSE_MAX_CALLS_PER_MINUTE: z.coerce.number().int().min(1).max(5000).optional(),
  PULSE_DAILY_BUDGET_USD: z.coerce.number().nonnegative().max(1e9).optional(),
  PULSE_MONTHLY_BUDGET_USD: z.coerce.number().nonnegative().max(1e9).optional(),
  PULSE_PAUSE_ON_BUDGET: z.enum(["true", "false", "1", "0"]).default("true"),
  PULSE_TIME_ZONE: z.string().default("UTC").refine((tz) => {
    try {
      new Intl.DateTimeFormat("en", { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  }, "Unknown IANA time zone"),
});

export type Config = z.infer<typeof Env> & {
  host: string;
  kv_path: string;
  limits: Limits;
  retention: { completed: number | null; failed: number | null; cancelled: number | null };
};

/**
 * Reads the configuration from `env`. Throws a `TypeError` naming every bad variable.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const config = loadConfig({ PORT: "8080" });
 * console.log(config.PORT, config.PULSE_WORKERS); // 8080 4
 * ```
 */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const parsed = Env.safeParse(
    Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== "")),
  );
  if (!parsed.success) {
    const bad = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    throw new TypeError(`Invalid configuration: ${bad.join("; ")}`);
  }
  const c = parsed.data;
  return {
    ...c,
    host: c.PULSE_HOST ?? (c.PULSE_API_TOKEN ? "0.0.0.0" : "127.0.0.1"),
    kv_path: c.PULSE_KV_PATH ?? "./data/pulse.sqlite",
    retention: {
      completed: c.PULSE_RETENTION_COMPLETED_MS,
      failed: c.PULSE_RETENTION_FAILED_MS,
      cancelled: c.PULSE_RETENTION_CANCELLED_MS,
    },
    // Seeds only: limits stored in KV (changed through the API) win at the next start.
    limits: {
      max_calls_per_minute: c.PULSE_MAX_CALLS_PER_MINUTE ?? null,
      daily_budget_usd: c.PULSE_DAILY_BUDGET_USD ?? null,
      monthly_budget_usd: c.PULSE_MONTHLY_BUDGET_USD ?? null,
      pause_on_budget: c.PULSE_PAUSE_ON_BUDGET === "true" || c.PULSE_PAUSE_ON_BUDGET === "1",
      time_zone: c.PULSE_TIME_ZONE,
      handler_limits: {},
    },
  };
}
