/**
 * `deno task bench [--json] [--quick]`: Pulse's throughput, latency and memory on a temp KV
 * file with no-op handlers, beside the reference loop (../shared/bench/lifecycle.ts, batched,
 * c=50) run in the same invocation. `--quick` runs a short subset for the CI regression check.
 */
import {
  endToEnd as endToEndOf,
  fill,
  median,
  openBench,
  peakRssMiB,
  percentile,
  rssAfterGc,
  until,
} from "./lib.ts";
import { decodeJob } from "../src/store/mod.ts";

const args = new Set(Deno.args);
const QUICK = args.has("--quick");
const N = QUICK ? 3000 : 20_000;
const out: Record<string, unknown> = { quick: QUICK, n: N, deno: Deno.version.deno };
const log = (s: string) => !args.has("--json") && console.error(s);

const endToEnd = (workers: number) => endToEndOf(workers, N);

/** 20,000 jobs through the HTTP API: one POST per job (50 in flight), then the batch route. */
async function enqueueThroughput() {
  const b = await openBench(1, { start: false });
  try {
    const body = JSON.stringify({ handler_name: "bench.noop" });
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 50 }, async () => {
      while (next < N) {
        next++;
        const res = await fetch(`${b.url}/api/pulse/jobs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        });
        if (res.status !== 201) throw new Error(`enqueue answered ${res.status}`);
        await res.body?.cancel();
      }
    }));
    const single = N / ((performance.now() - t0) / 1000);
    const jobs = Array.from({ length: 1000 }, () => ({ handler_name: "bench.noop" }));
    const t1 = performance.now();
    for (let i = 0; i < N; i += 1000) {
      const res = await fetch(`${b.url}/api/pulse/jobs/batch`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jobs }),
      });
      if (res.status !== 200) throw new Error(`batch answered ${res.status}`);
      await res.body?.cancel();
    }
    return { single, batch: N / ((performance.now() - t1) / 1000) };
  } finally {
    await b.close();
  }
}

/** Enqueue → start (pickup) and enqueue → completed at a steady rate, one job per request. */
async function latency(rate: number, count: number) {
  const b = await openBench(10);
  try {
    const enqueued = new Map<string, number>();
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      const due = t0 + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const at = performance.now();
      const [r] = await b.pulse.store.jobs.insert([{
        handler_name: "bench.probe",
        source: "",
        queue: "default",
        cost_estimate: 0,
        total: 0,
        priority: 0,
      }]);
      if (!r.ok) throw new Error(r.message);
      b.pulse.pool.wake(); // what the API does after an enqueue
      enqueued.set(r.job.id, at);
    }
    await until(async () => (await b.pulse.store.stats.read()).completed === count);
    const pickup = [...enqueued].map(([id, at]) => b.starts.get(id)! - at);
    const done: number[] = [];
    for await (const e of b.kv.list({ prefix: ["pulse", "job"] })) {
      const job = decodeJob(e.key[2] as string, e.value);
      done.push(Date.parse(job.completed_at!) - Date.parse(job.created_at));
    }
    return {
      pickup_p50_ms: percentile(pickup, 50),
      pickup_p99_ms: percentile(pickup, 99),
      add_to_completion_p50_ms: percentile(done, 50),
      add_to_completion_p99_ms: percentile(done, 99),
    };
  } finally {
    await b.close();
  }
}

/** RSS after 10,000 and after 100,000 finished jobs; list latency at 1,000 and at 100,000. */
async function memoryAndList(total: number) {
  const b = await openBench(50, { start: false });
  try {
    const listP50 = async () => {
      const times: number[] = [];
      for (let i = 0; i < 50; i++) {
        const t = performance.now();
        const res = await fetch(`${b.url}/api/pulse/jobs?status=completed&limit=100`);
        await res.arrayBuffer();
        times.push(performance.now() - t);
      }
      return median(times);
    };
    b.pulse.start();
    const result: Record<string, number> = {};
    let done = 0;
    for (const mark of [1000, 10_000, total]) {
      await fill(b.pulse, mark - done);
      done = mark;
      await until(async () => (await b.pulse.store.stats.read()).completed === mark, 900_000, 10);
      if (mark === 1000) result.list_p50_ms_at_1k = await listP50();
      if (mark === 10_000) {
        result.rss_after_10k_mib = rssAfterGc();
        result.heap_after_10k_mib = Deno.memoryUsage().heapUsed / 1024 ** 2;
      }
      if (mark === total) {
        result.rss_after_100k_mib = rssAfterGc();
        result.heap_after_100k_mib = Deno.memoryUsage().heapUsed / 1024 ** 2;
        result.list_p50_ms_at_100k = await listP50();
      }
    }
    return result;
  } finally {
    await b.close();
  }
}

/** The reference loop, from ../shared when present, as the store's ceiling on this machine. */
async function reference(concurrency: number): Promise<number | null> {
  const path = new URL("../../shared/bench/lifecycle.ts", import.meta.url);
  try {
    await Deno.stat(path);
  } catch {
    return null;
  }
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      path.pathname,
      "--store",
      "file",
      "--concurrency",
      `${concurrency}`,
      "--mode",
      "batched",
      "--n",
      `${N}`,
    ],
    env: { BENCH_DATA_DIR: await Deno.makeTempDir({ prefix: "pulse-ref-" }) },
    stdout: "piped",
    stderr: "inherit",
  });
  const res = await cmd.output();
  const line = new TextDecoder().decode(res.stdout).trim().split("\n").at(-1) ?? "{}";
  return JSON.parse(line).process_jobs_per_s ?? null;
}

log(`Pulse bench (${QUICK ? "quick" : "full"}), ${N} jobs per run`);
const e2e: Record<string, number> = {};
for (const w of QUICK ? [50] : [1, 10, 50]) {
  e2e[`w${w}`] = await endToEnd(w);
  log(`  end-to-end, ${w} workers: ${e2e[`w${w}`].toFixed(0)} jobs/s`);
}
out.e2e_jobs_per_s = e2e;
const ref = await reference(50);
out.reference_jobs_per_s = ref;
out.ratio_to_reference = ref ? e2e.w50 / ref : null;
log(
  `  reference loop (batched, c=50): ${ref?.toFixed(0)} jobs/s → ratio ${
    (out.ratio_to_reference as number)?.toFixed(2)
  }`,
);
out.peak_rss_mib = peakRssMiB();
if (!QUICK) {
  const enq = await enqueueThroughput();
  out.enqueue_single_jobs_per_s = enq.single;
  out.enqueue_batch_jobs_per_s = enq.batch;
  log(
    `  enqueue via API: ${enq.single.toFixed(0)} jobs/s single, ${
      enq.batch.toFixed(0)
    } jobs/s batch`,
  );
  Object.assign(out, await latency(500, 5000));
  log(`  pickup at 500 jobs/s: p50 ${out.pickup_p50_ms} ms, p99 ${out.pickup_p99_ms} ms`);
  out.peak_rss_mib = peakRssMiB();
  Object.assign(out, await memoryAndList(100_000));
  log(
    `  RSS after GC: ${(out.rss_after_10k_mib as number).toFixed(1)} MiB at 10k, ${
      (out.rss_after_100k_mib as number).toFixed(1)
    } MiB at 100k`,
  );
  log(
    `  list p50: ${(out.list_p50_ms_at_1k as number).toFixed(2)} ms at 1k, ${
      (out.list_p50_ms_at_100k as number).toFixed(2)
    } ms at 100k`,
  );
}
if (args.has("--json")) console.log(JSON.stringify(out));
else console.log(JSON.stringify(out, null, 2));
const floor = Number(Deno.env.get("PULSE_BENCH_FLOOR") ?? "0");
if (floor && out.ratio_to_reference !== null && (out.ratio_to_reference as number) < floor) {
  console.error(
    `Ratio to the reference loop ${out.ratio_to_reference} is under the floor ${floor}`,
  );
  Deno.exit(1);
}
