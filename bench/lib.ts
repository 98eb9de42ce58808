/**
 * Shared parts of the benchmarks: a Pulse instance over a temp KV file with no-op handlers,
 * served on a loopback port, and small measuring helpers. Not part of the tests.
 */
import { createRegistry, defineHandler } from "../src/handlers/mod.ts";
import { createPulse, type Pulse } from "../src/pulse.ts";
import { z } from "zod";

export interface Bench {
  pulse: Pulse;
  kv: Deno.Kv;
  url: string;
  /** performance.now() at which each job id started, filled by the latency handler. */
  starts: Map<string, number>;
  close(): Promise<void>;
}

/** A Pulse with a no-op handler (`bench.noop`) and a latency probe (`bench.probe`). */
export async function openBench(
  workers: number,
  options: { start?: boolean } = {},
): Promise<Bench> {
  const dir = await Deno.makeTempDir({ prefix: "pulse-bench-" });
  const kv = await Deno.openKv(`${dir}/pulse.sqlite`);
  const starts = new Map<string, number>();
  const registry = createRegistry([
    defineHandler({
      name: "bench.noop",
      description: "No-op",
      payload: z.unknown(),
      run: () => null,
    }),
    defineHandler({
      name: "bench.probe",
      description: "Records when it started",
      payload: z.unknown(),
      run: (ctx) => void starts.set(ctx.job.id, performance.now()),
    }),
  ]);
  const pulse = createPulse({ kv, registry, workers, poll_interval_ms: 1000, lease_ms: 30_000 });
  if (options.start !== false) pulse.start();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    pulse.app.fetch,
  );
  return {
    pulse,
    kv,
    url: `http://127.0.0.1:${server.addr.port}`,
    starts,
    async close() {
      await server.shutdown();
      await pulse.stop();
      kv.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export const median = (xs: number[]) => percentile(xs, 50);

/** Resident set size now, in MiB. */
export const rssMiB = () => Deno.memoryUsage().rss / 1024 ** 2;

/** Peak resident set size of this process so far, in MiB (Linux VmHWM). */
export function peakRssMiB(): number {
  const m = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/);
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * glibc's malloc_trim, when this is Linux with glibc: hands memory the allocator holds but no one
 * uses back to the OS, so an RSS reading counts live memory, not the allocator's retention.
 */
const mallocTrim = (() => {
  try {
    const lib = Deno.dlopen("libc.so.6", { malloc_trim: { parameters: ["usize"], result: "i32" } });
    return () => void lib.symbols.malloc_trim(0n);
  } catch {
    return () => {};
  }
})();

/**
 * RSS after a forced GC (needs --v8-flags=--expose-gc) and malloc_trim, median of 3 readings.
 */
export function rssAfterGc(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  const readings: number[] = [];
  for (let i = 0; i < 3; i++) {
    gc?.();
    mallocTrim();
    readings.push(rssMiB());
  }
  return median(readings);
}

/** Polls `done` every few ms until it holds or `deadlineMs` passes (then throws). */
export async function until(done: () => Promise<boolean>, deadlineMs = 300_000, everyMs = 5) {
  const end = performance.now() + deadlineMs;
  while (!(await done())) {
    if (performance.now() > end) throw new Error("Benchmark step did not finish in time");
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Enqueues `n` no-op jobs straight through the store, in batches (setup, not measured). */
export async function fill(pulse: Pulse, n: number, handler = "bench.noop") {
  for (let i = 0; i < n; i += 1000) {
    const items = Array.from({ length: Math.min(1000, n - i) }, () => ({
      handler_name: handler,
      source: "",
      queue: "default",
      cost_estimate: 0,
      total: 0,
      priority: 0,
    }));
    await pulse.store.jobs.insert(items);
  }
}

/**
 * First claim → last completion of `n` queued no-op jobs with `workers` workers (jobs/s). The end
 * is seen by reading the completed counter every 20 ms: at most 20 ms late (≤ 0.5 % of a run),
 * where reading it every 2 ms took 8–13 % of the throughput it measured (each read is a KV list
 * on the writer thread Pulse needs).
 */
export async function endToEnd(workers: number, n: number): Promise<number> {
  const b = await openBench(workers, { start: false });
  try {
    await fill(b.pulse, n);
    const t0 = performance.now();
    b.pulse.start();
    await until(async () => (await b.pulse.store.stats.read()).completed === n, 600_000, 20);
    return n / ((performance.now() - t0) / 1000);
  } finally {
    await b.close();
  }
}

/** The V8 flags `deno task start` runs Pulse with (README, "Memory"). */
const V8_FLAGS = "--max-semi-space-size=8,--heap-growing-percent=50";

/** Runs one phase of bench/phase.ts in a fresh process and returns its JSON line. */
export async function phase(name: string, ...options: (string | number)[]) {
  const script = new URL("./phase.ts", import.meta.url).pathname;
  const res = await new Deno.Command(Deno.execPath(), {
    // The V8 flags `deno task start` runs Pulse with (README, "Memory"), and gc() for readings.
    args: [
      "run",
      "-A",
      `--v8-flags=--expose-gc,${V8_FLAGS}`,
      script,
      name,
      ...options.map(String),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!res.success) throw new Error(`Bench phase "${name}" failed (exit ${res.code})`);
  const line = new TextDecoder().decode(res.stdout).trim().split("\n").at(-1) ?? "{}";
  return JSON.parse(line) as Record<string, number>;
}
