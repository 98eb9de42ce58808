/**
 * `deno task bench [--json] [--quick]`: Pulse's throughput, latency and memory on a temp KV
 * file with no-op handlers, beside the reference loop (../shared/bench/lifecycle.ts, batched,
 * c=50) run in the same invocation. Each phase runs in its own process (bench/phase.ts), so a
 * peak RSS belongs to one phase. End-to-end at 50 workers and the reference loop are run as
 * alternating pairs (5 in the full run, 3 with `--quick`) and the ratio is the median of the
 * pairs': a KV file's speed moves with the disk, and a pair shares its moment.
 * `--quick` runs a short subset for the CI regression check.
 */
import { median, phase } from "./lib.ts";

const args = new Set(Deno.args);
const QUICK = args.has("--quick");
const N = QUICK ? 3000 : 20_000;
const PAIRS = QUICK ? 3 : 5;
const out: Record<string, unknown> = { quick: QUICK, n: N, deno: Deno.version.deno };
const log = (s: string) => !args.has("--json") && console.error(s);

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
const peaks: Record<string, number> = {};
for (const w of QUICK ? [] : [1, 10]) {
  const r = await phase("e2e", "--workers", w, "--n", N);
  e2e[`w${w}`] = r.jobs_per_s;
  peaks[`w${w}`] = r.peak_rss_mib;
  log(`  end-to-end, ${w} workers: ${r.jobs_per_s.toFixed(0)} jobs/s`);
}
const pairs: { pulse: number; reference: number | null; peak: number }[] = [];
for (let i = 0; i < PAIRS; i++) {
  const r = await phase("e2e", "--workers", 50, "--n", N);
  const ref = await reference(50);
  pairs.push({ pulse: r.jobs_per_s, reference: ref, peak: r.peak_rss_mib });
  log(
    `  end-to-end, 50 workers: ${r.jobs_per_s.toFixed(0)} jobs/s; reference loop (batched, ` +
      `c=50): ${ref?.toFixed(0)} jobs/s → ratio ${ref ? (r.jobs_per_s / ref).toFixed(2) : "–"}`,
  );
}
e2e.w50 = median(pairs.map((p) => p.pulse));
peaks.w50 = Math.max(...pairs.map((p) => p.peak));
out.e2e_jobs_per_s = e2e;
const refs = pairs.map((p) => p.reference).filter((r): r is number => r !== null);
out.reference_jobs_per_s = refs.length ? median(refs) : null;
out.ratio_to_reference = refs.length === pairs.length
  ? median(pairs.map((p) => p.pulse / p.reference!))
  : null;
out.pairs = pairs.map((p) => ({ pulse_jobs_per_s: p.pulse, reference_jobs_per_s: p.reference }));
out.peak_rss_mib = peaks.w50; // during the 20,000-job run at 50 workers
out.peak_rss_mib_per_run = peaks;
if (!QUICK) {
  const enq = await phase("enqueue", "--n", N);
  out.enqueue_single_jobs_per_s = enq.single;
  out.enqueue_batch_jobs_per_s = enq.batch;
  log(
    `  enqueue via API: ${enq.single.toFixed(0)} jobs/s single, ${
      enq.batch.toFixed(0)
    } jobs/s batch`,
  );
  // Latency and memory move from run to run (the disk, what the allocator keeps): each is run
  // 3 times, each in its own process, and every figure is the median of the runs'.
  const runs = async (name: string, ...options: (string | number)[]) => {
    const all = [];
    for (let i = 0; i < 3; i++) all.push(await phase(name, ...options));
    const med: Record<string, number> = {};
    for (const k of Object.keys(all[0])) {
      if (k !== "peak_rss_mib") med[k] = median(all.map((r) => r[k]));
    }
    return { med, all };
  };
  const lat = await runs("latency", "--rate", 500, "--n", 5000);
  Object.assign(out, lat.med);
  out.pickup_p50_ms_per_run = lat.all.map((r) => r.pickup_p50_ms);
  log(
    `  pickup at 500 jobs/s (median of 3 runs): p50 ${lat.med.pickup_p50_ms.toFixed(2)} ms ` +
      `(${lat.all.map((r) => r.pickup_p50_ms.toFixed(2)).join(" / ")}), p99 ` +
      `${lat.med.pickup_p99_ms.toFixed(2)} ms`,
  );
  const { med: mem, all: memRuns } = await runs("memory", "--n", 100_000);
  Object.assign(out, mem);
  const change = memRuns.map((r) => r.rss_after_100k_mib / r.rss_after_10k_mib - 1);
  out.rss_change_10k_to_100k = median(change);
  out.rss_change_per_run = change;
  log(
    `  RSS after GC (median of 3 runs): ${mem.rss_after_10k_mib.toFixed(1)} MiB at 10k, ` +
      `${mem.rss_after_100k_mib.toFixed(1)} MiB at 100k; change ` +
      `${change.map((c) => `${(100 * c).toFixed(1)} %`).join(" / ")} (anonymous ` +
      `${mem.rss_anon_after_10k_mib.toFixed(1)} → ${mem.rss_anon_after_100k_mib.toFixed(1)})`,
  );
  log(
    `  list p50: ${mem.list_p50_ms_at_1k.toFixed(2)} ms at 1k, ${
      mem.list_p50_ms_at_100k.toFixed(2)
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
