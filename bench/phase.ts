/**
 * One phase of `deno task bench`, run in a process of its own so that its peak RSS is its own
 * and no phase inherits another's heap:
 *
 *   deno run -A --v8-flags=--expose-gc bench/phase.ts <e2e|enqueue|latency|memory> [options]
 *
 * Prints one JSON object on stdout. Not part of the tests.
 */
import { decodeJob } from "../src/store/mod.ts";
import {
  endToEnd,
  fill,
  median,
  openBench,
  peakRssMiB,
  percentile,
  rssAfterGc,
  until,
} from "./lib.ts";

const [phase, ...rest] = Deno.args;
const opt = (name: string, fallback: number) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? Number(rest[i + 1]) : fallback;
};
const N = opt("n", 20_000);

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
    // After the first 10,000 the jobs come in bursts of 9,000 like the one before the 10k
    // reading: what the allocator keeps after a burst grows with the burst, and the reading is
    // about what each finished job leaves behind.
    const marks = [1000, 10_000];
    for (let m = 19_000; m <= total; m += 9000) marks.push(m);
    if (marks.at(-1)! < total) marks.push(total);
    for (const mark of marks) {
      await fill(b.pulse, mark - done);
      done = mark;
      await until(async () => (await b.pulse.store.stats.read()).completed === mark, 900_000, 10);
      if (mark === 1000) result.list_p50_ms_at_1k = await listP50();
      if (mark === 10_000) {
        result.rss_after_10k_mib = rssAfterGc();
        const split = rssSplitMiB();
        result.rss_anon_after_10k_mib = split.anon;
        result.rss_file_after_10k_mib = split.file;
        result.heap_after_10k_mib = Deno.memoryUsage().heapUsed / 1024 ** 2;
      }
      if (mark === total) {
        result.rss_after_100k_mib = rssAfterGc();
        const split = rssSplitMiB();
        result.rss_anon_after_100k_mib = split.anon;
        result.rss_file_after_100k_mib = split.file;
        result.heap_after_100k_mib = Deno.memoryUsage().heapUsed / 1024 ** 2;
        result.list_p50_ms_at_100k = await listP50();
      }
    }
    return result;
  } finally {
    await b.close();
  }
}

/** This process's resident memory split: anonymous (heap, sqlite cache) and file-backed. */
function rssSplitMiB() {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kb = (name: string) =>
    Number(status.match(new RegExp(`${name}:\\s+(\\d+) kB`))?.[1]) / 1024;
  return { anon: kb("RssAnon"), file: kb("RssFile") };
}

let result: Record<string, unknown>;
if (phase === "e2e") {
  result = { jobs_per_s: await endToEnd(opt("workers", 50), N) };
} else if (phase === "enqueue") {
  result = await enqueueThroughput();
} else if (phase === "latency") {
  result = await latency(opt("rate", 500), N);
} else if (phase === "memory") {
  result = await memoryAndList(N);
} else {
  throw new Error(`Unknown phase "${phase}": e2e, enqueue, latency or memory`);
}
console.log(JSON.stringify({ ...result, peak_rss_mib: peakRssMiB() }));
