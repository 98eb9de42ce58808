/**
 * `deno task bench:retention [--n=100000] [--runs=3]`: retention at scale, through the store.
 *
 * Each run opens a temp KV file, inserts `n` jobs in batches (`store.jobs.insert`) and finishes
 * them through the lifecycle (`store.claims.next` + `store.transitions.apply`: half completed,
 * a quarter failed, a quarter cancelled), checks that the stats equal a recount from the indexes,
 * prunes them all with `store.jobs.prune`, and checks again (nothing of any job may be left).
 * RSS is read after a forced GC (run with `--v8-flags=--expose-gc`; the task does) when 10,000
 * and `n` jobs have been processed in each phase. Each run is its own process, so one run's heap
 * does not carry into the next; the figures are the median of the runs.
 *
 * Prints one JSON line, then a short table. Not a test.
 */
import { createStore, type NewJob, type Store } from "../src/store/mod.ts";
import { JOB_STATUSES, type JobStatus } from "../src/types.ts";

/** A count of 0 for every job status. */
const zeroCounts = () =>
  Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<JobStatus, number>;

const arg = (name: string, fallback: number) =>
  Number(Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const N = arg("n", 100_000);
const RUNS = arg("runs", 3);
const MARK = Math.min(10_000, N);
const BATCH = 1000;

interface RunResult {
  fill_s: number;
  fill_jobs_per_s: number;
  prune_s: number;
  prune_jobs_per_s: number;
  rss_fill_mark_mib: number;
  rss_fill_end_mib: number;
  rss_prune_mark_mib: number;
  rss_prune_end_mib: number;
  heap_fill_mark_mib: number;
  heap_fill_end_mib: number;
  heap_prune_mark_mib: number;
  heap_prune_end_mib: number;
  kv_file_mib: number;
}

const gc = (globalThis as { gc?: () => void }).gc;
/**
 * RSS and V8 heap in use, in MiB, after a forced GC (twice: the first may only schedule
 * finalizers). The heap tells JS objects kept per job from native memory (KV, allocator).
 */
function afterGc(): { rss: number; heap: number } {
  if (!gc) throw new Error("Run with --v8-flags=--expose-gc (deno task bench:retention does)");
  gc();
  gc();
  const m = Deno.memoryUsage();
  return { rss: m.rss / 1024 ** 2, heap: m.heapUsed / 1024 ** 2 };
}

const JOB: NewJob = {
  handler_name: "bench.noop",
  source: "",
  queue: "default",
  cost_estimate: 0,
  total: 0,
  priority: 0,
};

/** One batch: inserted, a quarter cancelled, the rest claimed, then completed or failed. */
async function fillBatch(
  store: Store,
  size: number,
  now: number,
  tally: Record<JobStatus, number>,
) {
  const inserted = await store.jobs.insert(Array.from({ length: size }, () => JOB));
  const ids = inserted.map((r) => {
    if (!r.ok) throw new Error(r.message);
    return r.job.id;
  });
  const cancel = ids.slice(0, Math.floor(size / 4));
  for (let i = 0; i < cancel.length; i += 80) {
    const out = await store.transitions.apply(
      cancel.slice(i, i + 80).map((id) => ({
        id,
        event: () => ({ type: "cancel" as const, now }),
      })),
    );
    if (out.some((o) => !o.ok)) throw new Error("cancel refused");
    tally.cancelled += out.length;
  }
  let finished = 0;
  for (;;) {
    const claimed = await store.claims.next({ owner: "bench", max: 50, lease_ms: 60_000 });
    if (!claimed.length) break;
    const out = await store.transitions.apply(claimed.map((job) => ({
      id: job.id,
      lease: { owner: "bench", attempt: job.attempt },
      event: () =>
        finished++ % 3 === 2
          ? {
            type: "fail" as const,
            now,
            backoff_ms: 0,
            error_context: {
              stage: "run",
              code: "validation_error" as const,
              message: "bench",
              retryable: false,
              recoverable: false,
            },
          }
          : { type: "complete" as const, now, result: null },
    })));
    for (const o of out) {
      if (!o.ok) throw new Error(`complete/fail refused: ${o.message}`);
      tally[o.job.status]++;
    }
  }
}

/** Status counts from the stats counters, the by_status index, and the records. */
async function counts(kv: Deno.Kv, store: Store) {
  const count = async (prefix: Deno.KvKey) => {
    let n = 0;
    for await (const _ of kv.list({ prefix }, { batchSize: 1000 })) n++;
    return n;
  };
  const byStatus: Record<string, number> = {};
  for (const s of JOB_STATUSES) {
    byStatus[s] = await count(store.keys.byStatus(s));
  }
  return {
    stats: await store.stats.read(),
    byStatus,
    records: await count(store.keys.jobs()),
    events: await count([...store.keys.prefix, "events"]),
  };
}

function check(
  c: Awaited<ReturnType<typeof counts>>,
  expected: Record<JobStatus, number>,
  when: string,
) {
  const total = Object.values(expected).reduce((a, b) => a + b, 0);
  const problems: string[] = [];
  for (const s of JOB_STATUSES) {
    if (c.stats[s] !== expected[s]) problems.push(`stats.${s} = ${c.stats[s]}, not ${expected[s]}`);
    if (c.byStatus[s] !== c.stats[s]) problems.push(`by_status ${s}: ${c.byStatus[s]} ≠ stats`);
  }
  if (c.stats.total !== total || c.records !== total) {
    problems.push(`total: stats ${c.stats.total}, records ${c.records}, expected ${total}`);
  }
  if (total === 0 && c.events !== 0) problems.push(`${c.events} history entries left behind`);
  if (problems.length) throw new Error(`Counts wrong ${when}: ${problems.join("; ")}`);
}

/** One run in this process: fill, check, prune, check. */
async function runOnce(): Promise<RunResult> {
  const dir = await Deno.makeTempDir({ prefix: "pulse-retention-" });
  const path = `${dir}/pulse.sqlite`;
  const kv = await Deno.openKv(path);
  let now = Date.UTC(2026, 0, 1);
  const store = createStore({ kv, now: () => now });
  try {
    const mem: Record<string, number> = {};
    const mark = (phase: string, at: string) => {
      const m = afterGc();
      mem[`rss_${phase}_${at}_mib`] = m.rss;
      mem[`heap_${phase}_${at}_mib`] = m.heap;
    };
    const t0 = performance.now();
    const expected: Record<JobStatus, number> = zeroCounts();
    for (let done = 0; done < N; done += BATCH) {
      await fillBatch(store, Math.min(BATCH, N - done), now, expected);
      const processed = Math.min(N, done + BATCH);
      if (processed === MARK) mark("fill", "mark");
    }
    const fill_s = (performance.now() - t0) / 1000;
    mark("fill", "end");
    check(await counts(kv, store), expected, "after the fill");

    now += 1000; // every job finished 1 s ago; ages of 0 make them all due
    const ages = { completed: 0, failed: 0, cancelled: 0 };
    const t1 = performance.now();
    let pruned = 0;
    let marked = false;
    for (;;) {
      const removed = await store.jobs.prune(now, ages, 500);
      if (!removed) break;
      pruned += removed;
      if (!marked && pruned >= MARK) {
        marked = true;
        mark("prune", "mark");
      }
    }
    const prune_s = (performance.now() - t1) / 1000;
    mark("prune", "end");
    if (pruned !== N) throw new Error(`Pruned ${pruned} of ${N} jobs`);
    check(await counts(kv, store), zeroCounts(), "after the prune");
    kv.close();
    const size = (await Deno.stat(path)).size;
    return {
      fill_s,
      fill_jobs_per_s: N / fill_s,
      prune_s,
      prune_jobs_per_s: N / prune_s,
      ...(mem as Pick<RunResult, `${"rss" | "heap"}_${"fill" | "prune"}_${"mark" | "end"}_mib`>),
      kv_file_mib: size / 1024 ** 2,
    };
  } finally {
    try {
      kv.close();
    } catch { /* closed above */ }
    await Deno.remove(dir, { recursive: true });
  }
}

const PAST = { fill: "filled", prune: "pruned" } as const;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

if (Deno.args.includes("--child")) {
  console.log(JSON.stringify(await runOnce()));
} else {
  const started = performance.now();
  const runs: RunResult[] = [];
  for (let i = 0; i < RUNS; i++) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-kv",
        "--v8-flags=--expose-gc",
        import.meta.filename!,
        "--child",
        `--n=${N}`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`Run ${i + 1} failed (exit ${out.code})`);
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    runs.push(JSON.parse(lines[lines.length - 1]));
    console.error(`run ${i + 1}/${RUNS}: ${lines[lines.length - 1]}`);
  }
  const keys = Object.keys(runs[0]) as (keyof RunResult)[];
  const result = Object.fromEntries(
    keys.map((k) => [k, Math.round(median(runs.map((r) => r[k])) * 10) / 10]),
  );
  console.log(JSON.stringify({
    bench: "retention",
    n: N,
    runs: RUNS,
    mark: MARK,
    deno: Deno.version.deno,
    median: result,
    each: runs.map((r) => Object.fromEntries(keys.map((k) => [k, Math.round(r[k] * 10) / 10]))),
    wall_s: Math.round((performance.now() - started) / 100) / 10,
  }));
  const row = (label: string, value: string) => `  ${label.padEnd(34)} ${value}`;
  console.log(
    [
      `Retention of ${N.toLocaleString("en")} finished jobs (median of ${RUNS} runs)`,
      row("fill (insert + finish)", `${result.fill_s} s, ${result.fill_jobs_per_s} jobs/s`),
      row("prune (store.jobs.prune)", `${result.prune_s} s, ${result.prune_jobs_per_s} jobs/s`),
      row("after GC, RSS (V8 heap used)", ""),
      ...(["fill", "prune"] as const).flatMap((phase) =>
        (["mark", "end"] as const).map((at) =>
          row(
            `  ${(at === "mark" ? MARK : N).toLocaleString("en")} ${PAST[phase]}`,
            `${result[`rss_${phase}_${at}_mib`]} MiB (${result[`heap_${phase}_${at}_mib`]} MiB)`,
          )
        )
      ),
      row("KV file after prune", `${result.kv_file_mib} MiB`),
      row("stats = recount from indexes", "yes (checked after fill and after prune)"),
    ].join("\n"),
  );
}
