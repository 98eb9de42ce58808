/**
 * Pulse's entry point: reads the environment, opens Deno KV, loads the handlers, starts the
 * worker pool and the HTTP server, and stops gracefully on SIGINT/SIGTERM.
 *
 *     deno task start            # or: deno run -A main.ts (env vars configure everything)
 *
 * @module
 */
import { loadConfig } from "./src/config.ts";
import { loadHandlers } from "./src/handlers/mod.ts";
import type { Config } from "./src/config.ts";
import { createPulse } from "./src/pulse.ts";

/** The instance this process runs, for the Deploy cron below. */
let current: ReturnType<typeof createPulse> | null = null;

// Deno Deploy may freeze an idle isolate, and with it the pool's timers; a cron tick (registered
// at module top level, as Deploy requires) still sweeps expired leases there once a minute.
if (Deno.env.get("DENO_DEPLOYMENT_ID")) {
  Deno.cron("pulse lease sweep", "* * * * *", async () => {
    await current?.pool.sweepOnce();
  });
}

async function main() {
  const config = loadConfig(Deno.env.toObject());
  if (!config.PULSE_API_TOKEN && !["127.0.0.1", "::1", "localhost"].includes(config.host)) {
    throw new Error(
      `Refusing to bind "${config.host}" without PULSE_API_TOKEN: the API would be open to the network`,
    );
  }
  if (Deno.env.get("DENO_DEPLOYMENT_ID") && !config.PULSE_API_TOKEN) {
    throw new Error(
      "Refusing to start on Deno Deploy without PULSE_API_TOKEN: the API would be public",
    );
  }
  const opened = await openKv(config);
  const registry = await loadHandlers(config.PULSE_HANDLERS_DIR);
  for (const e of registry.errors) {
    console.error(`Handler module failed to load: ${e.path}: ${e.message}`);
  }
  const pulse = createPulse({
    kv: opened.kv,
    registry,
    prefix: config.PULSE_KV_PREFIX,
    workers: config.PULSE_WORKERS,
    poll_interval_ms: config.PULSE_POLL_INTERVAL_MS,
    lease_ms: config.PULSE_LEASE_MS,
    stop_timeout_ms: config.PULSE_STOP_TIMEOUT_MS,
    graceful_start_phase_ms: config.PULSE_GRACEFUL_START_PHASE_MS,
    retention: config.retention,
    token: config.PULSE_API_TOKEN,
    limits: config.limits,
  });
  // Serve first: if the port is taken, Pulse exits before its pool has claimed any job.
  const server = Deno.serve({
    port: config.PORT,
    hostname: config.host,
    onListen: ({ hostname, port }) => {
      const names = registry.list().map((h) => h.name).join(", ") || "none";
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(
        `Pulse listening on http://${host}:${port} (kv: ${opened.where}; handlers: ${names})`,
      );
      if (!config.PULSE_API_TOKEN) {
        console.log(
          `No PULSE_API_TOKEN set: binding ${hostname} only; set a token to serve other hosts`,
        );
      }
    },
  }, pulse.app.fetch);
  pulse.start();
  current = pulse;

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping (waiting up to ${config.PULSE_STOP_TIMEOUT_MS} ms for jobs)`);
    await pulse.stop();
    await server.shutdown();
    opened.close();
    console.log("Pulse stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

/**
 * Opens the KV store: a KV Connect URL, Deno Deploy's KV, or a local sqlite file. A local file
 * is guarded by an OS lock on `<file>.lock` (released when the process dies, even by kill -9),
 * because a second process on one file would fail its commits and miss watches.
 */
async function openKv(config: Config) {
  if (config.PULSE_KV_URL) {
    const kv = await Deno.openKv(config.PULSE_KV_URL);
    return {
      kv,
      where: config.PULSE_KV_URL.replace(/\/\/[^@]*@/, "//***@"),
      close: () => kv.close(),
    };
  }
  if (Deno.env.get("DENO_DEPLOYMENT_ID")) {
    const kv = await Deno.openKv();
    return { kv, where: "Deno Deploy KV", close: () => kv.close() };
  }
  const configured = config.kv_path;
  const slash = configured.lastIndexOf("/");
  const dir = slash >= 0 ? configured.slice(0, slash) || "/" : ".";
  await Deno.mkdir(dir, { recursive: true });
  // The lock belongs to the real file, so a second process that reaches the same file through
  // a symlink meets the same lock. A file not created yet is named by its folder's real path.
  const path = await Deno.realPath(configured).catch(async () =>
    `${await Deno.realPath(dir)}/${configured.slice(slash + 1)}`
  );
  const lockFile = await Deno.open(`${path}.lock`, { create: true, write: true });
  const locked = await Promise.race([
    lockFile.lock(true).then(() => true),
    new Promise<false>((r) => setTimeout(() => r(false), 500)),
  ]);
  if (!locked) {
    const via = path === configured ? "" : ` (PULSE_KV_PATH "${configured}")`;
    throw new Error(
      `KV file "${path}"${via} is in use by another Pulse process ` +
        `(lock "${path}.lock" is held). Stop it, or set PULSE_KV_PATH to another file`,
    );
  }
  const kv = await Deno.openKv(path);
  return {
    kv,
    where: await Deno.realPath(path),
    close: () => {
      kv.close();
      lockFile.close();
    },
  };
}

if (import.meta.main) {
  main().catch((err) => {
    console.error(`Pulse failed to start: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  });
}
