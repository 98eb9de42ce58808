/**
 * Crash scenario shared by `tests/e2e_crash_test.ts` (20 rounds, 200 jobs) and the soak
 * `bench/crash_soak.ts` (`deno task soak`, more of both): `main.ts` as a real process is killed
 * with SIGKILL at many points while it works through jobs, restarted on the same KV file each
 * time, and finally left to finish. Then the KV file is opened directly and every job, its
 * history, the indexes and the counters are checked against DESIGN invariants 2, 3 and 6:
 * nothing lost, nothing claimed twice, nothing completed twice.
 *
 * The handler prints one side-effect line per start and per finish (`SIDE start <id> <attempt>`,
 * `SIDE done <id> <attempt>`); the kill points are "after N more such lines", N from a seeded
 * PRNG, so a failing run can be replayed with the same seed (timing still varies).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type Json,
  MOD_URL,
  poll,
  type PulseProcess,
  startHealthy,
  tempDir,
  withKv,
} from "./_process.ts";
import { decodeEvents, decodeJob, recordHistory } from "../src/store/mod.ts";
import { zeroCounts } from "./_util.ts";

export interface CrashOptions {
  /** Jobs enqueued through the API before the first kill. */
  jobs: number;
  /** Kill -9 + restart rounds. */
  rounds: number;
  /** PRNG seed: kill points and job durations. */
  seed: number;
  workers?: number;
  lease_ms?: number;
  /** Side-effect lines to wait for before each kill: [min, max], inclusive. */
  lines?: [number, number];
  /** Handler run time in ms: [min, max], inclusive. */
  sleep_ms?: [number, number];
  /** Deadline for one process start (to healthy). */
  start_timeout_ms?: number;
  /** Deadline for one round's side-effect lines. */
  round_timeout_ms?: number;
  /** Deadline for the last process to finish every job. */
  finish_timeout_ms?: number;
  /** Progress lines (the soak prints them; the test keeps quiet). */
  log?: (line: string) => void;
  /** On failure, keep the temp dir (KV file, handler) for a post-mortem and name it. */
  keep_on_failure?: boolean;
}

export interface CrashSummary {
  seed: number;
  jobs: number;
  rounds: number;
  /** SIGKILLs that found nothing left to run (every job finished already). */
  idle_kills: number;
  completed: number;
  failed: number;
  /** Sum of `attempt` over all jobs (= claim events). */
  attempts: number;
  /** `expire` events over all jobs (leases lost to the kills). */
  expires: number;
  /** Jobs whose handler printed `done` more than once (at-least-once: killed before commit). */
  repeated_side_effects: number;
  side_lines: number;
  stats: Json;
  restart_ms: { min: number; avg: number; max: number };
  took_ms: { enqueue: number; rounds: number; finish: number; verify: number; total: number };
  /** stderr lines of any process that look like engine trouble (reported, not fatal). */
  stderr_warnings: string[];
}

const HANDLER_NAME = "crash.sleep";

/** The handler module: sleeps `payload.ms`, honours ctx.signal, prints a line at start and end. */
const SLEEP_HANDLER = `import { defineHandler, z } from ${JSON.stringify(MOD_URL)};
export default defineHandler({
  name: ${JSON.stringify(HANDLER_NAME)},
  description: "Sleeps payload.ms; prints one side-effect line per start and per finish",
  payload: z.object({ n: z.number().int(), ms: z.number().int().min(0).max(10000) }),
  async run(ctx) {
    console.log(\`SIDE start \${ctx.job.id} \${ctx.attempt}\`);
    await new Promise((resolve, reject) => {
      if (ctx.signal.aborted) return reject(ctx.signal.reason);
      const timer = setTimeout(resolve, ctx.payload.ms);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      }, { once: true });
    });
    console.log(\`SIDE done \${ctx.job.id} \${ctx.attempt}\`);
    return { n: ctx.payload.n, attempt: ctx.attempt };
  },
});
`;

/** mulberry32: a small seeded PRNG, so kill points and durations replay from the seed. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1)) };
}

interface SideLine {
  kind: "start" | "done";
  id: string;
  attempt: number;
}

const SIDE_RE = /^SIDE (start|done) (\S+) (\d+)$/gm;

/** The complete side-effect lines in `stdout` (a line still being written is not counted). */
function sideLines(stdout: string): SideLine[] {
  const complete = stdout.slice(0, stdout.lastIndexOf("\n") + 1);
  return [...complete.matchAll(SIDE_RE)].map((m) => ({
    kind: m[1] as SideLine["kind"],
    id: m[2],
    attempt: Number(m[3]),
  }));
}

const sideCount = (stdout: string) => sideLines(stdout).length;

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** Runs the whole scenario and its checks; throws an AssertionError on any violation. */
export async function runCrashScenario(o: CrashOptions): Promise<CrashSummary> {
  const began = Date.now();
  const log = o.log ?? (() => {});
  const rng = prng(o.seed);
  const [minLines, maxLines] = o.lines ?? [3, 15];
  const [minSleep, maxSleep] = o.sleep_ms ?? [50, 200];
  const startTimeout = o.start_timeout_ms ?? 30_000;
  const roundTimeout = o.round_timeout_ms ?? 30_000;
  const finishTimeout = o.finish_timeout_ms ?? 60_000;
  const where = `(seed ${o.seed})`;

  const dir = await tempDir("pulse_e2e_crash_");
  let failed = true;
  const kvPath = join(dir.path, "pulse.sqlite");
  const handlers = join(dir.path, "handlers");
  const env = {
    PULSE_KV_PATH: kvPath,
    PULSE_HANDLERS_DIR: handlers,
    PULSE_WORKERS: String(o.workers ?? 4),
    PULSE_LEASE_MS: String(o.lease_ms ?? 600),
    PULSE_GRACEFUL_START_PHASE_MS: "0",
    PULSE_POLL_INTERVAL_MS: "100",
    PULSE_STOP_TIMEOUT_MS: "2000",
    PULSE_RETENTION_COMPLETED_MS: "never",
    PULSE_RETENTION_FAILED_MS: "never",
    PULSE_RETENTION_CANCELLED_MS: "never",
  };

  /** stdout of every process that has exited, in order (the side-effect history). */
  const outputs: string[] = [];
  const stderrs: string[] = [];
  const restarts: number[] = [];
  const processes = new Set<PulseProcess>();
  let idleKills = 0;

  async function start(): Promise<PulseProcess> {
    const t0 = Date.now();
    const p = await startHealthy(env, { timeoutMs: startTimeout });
    processes.add(p);
    restarts.push(Date.now() - t0);
    assert.doesNotMatch(p.stderr(), /in use by another Pulse process/, `${where} lock still held`);
    return p;
  }
  async function retire(p: PulseProcess) {
    await p.status;
    outputs.push(p.stdout());
    stderrs.push(p.stderr());
    processes.delete(p);
  }

  try {
    await Deno.mkdir(handlers);
    await Deno.writeTextFile(join(handlers, "sleep.ts"), SLEEP_HANDLER);
    let p = await start();

    // Enqueue through the API, a few requests at a time.
    const t0 = Date.now();
    const ids: string[] = [];
    const payloads = Array.from({ length: o.jobs }, (_, n) => ({
      n,
      ms: rng.int(minSleep, maxSleep),
    }));
    for (let i = 0; i < payloads.length; i += 10) {
      const batch = await Promise.all(
        payloads.slice(i, i + 10).map((payload) =>
          p.api("POST", "/api/pulse/jobs", { handler_name: HANDLER_NAME, payload })
        ),
      );
      for (const res of batch) {
        assert.equal(res.status, 201, `${where} enqueue: ${JSON.stringify(res.body)}`);
        ids.push(res.body.id);
      }
    }
    const enqueueMs = Date.now() - t0;
    log(`enqueued ${ids.length} jobs in ${enqueueMs} ms`);

    // The kill rounds.
    const t1 = Date.now();
    for (let round = 1; round <= o.rounds; round++) {
      const want = rng.int(minLines, maxLines);
      const base = sideCount(p.stdout());
      let probes = 0;
      const reached = await poll(
        `${where} round ${round}: ${want} more side-effect lines`,
        async () => {
          if (p.exited) throw new Error(`main.ts exited on its own:\n${p.stderr()}`);
          if (sideCount(p.stdout()) - base >= want) return "lines";
          // Every ~0.5 s: is anything left to run at all? (Else no line will ever come.)
          if (++probes % 50 === 0) {
            const s = (await p.api("GET", "/api/pulse/stats")).body;
            if (s.queued + s.running + s.paused === 0) return "idle";
          }
          return undefined;
        },
        { timeoutMs: roundTimeout, intervalMs: 10 },
      );
      if (reached === "idle") idleKills++;
      p.kill("SIGKILL");
      const status = await p.waitExit(10_000);
      assert.equal(
        status.signal,
        "SIGKILL",
        `${where} round ${round}: exit ${JSON.stringify(status)}`,
      );
      await retire(p);
      // The OS lock died with the process: the next start must succeed at once.
      p = await start();
      if (round % 10 === 0 || round === o.rounds) {
        log(`round ${round}/${o.rounds}: killed after ${want} lines, restarted`);
      }
    }
    const roundsMs = Date.now() - t1;

    // The last process finishes everything.
    const t2 = Date.now();
    let last: Json = null;
    const stats = await poll(`${where} every job finished`, async () => {
      if (p.exited) throw new Error(`main.ts exited on its own:\n${p.stderr()}`);
      const res = await p.api("GET", "/api/pulse/stats");
      assert.equal(res.status, 200);
      const s = last = res.body;
      return s.queued + s.running + s.paused === 0 && s.total === o.jobs ? s : undefined;
    }, { timeoutMs: finishTimeout, intervalMs: 100 }).catch((err) => {
      throw new Error(`${err.message}; last stats ${JSON.stringify(last)}`, { cause: err });
    });
    p.kill("SIGTERM");
    const status = await p.waitExit(30_000);
    assert.equal(status.code, 0, `${where} exit after SIGTERM; stderr:\n${p.stderr()}`);
    await retire(p);
    const finishMs = Date.now() - t2;
    log(`all finished in ${finishMs} ms after the last round: ${JSON.stringify(stats)}`);

    const t3 = Date.now();
    const verified = await verify(kvPath, ids, payloads, stats, outputs, where);
    const verifyMs = Date.now() - t3;
    const sum = restarts.reduce((a, b) => a + b, 0);
    const summary: CrashSummary = {
      seed: o.seed,
      jobs: o.jobs,
      rounds: o.rounds,
      idle_kills: idleKills,
      ...verified,
      stats,
      restart_ms: {
        min: Math.min(...restarts),
        avg: Math.round(sum / restarts.length),
        max: Math.max(...restarts),
      },
      took_ms: {
        enqueue: enqueueMs,
        rounds: roundsMs,
        finish: finishMs,
        verify: verifyMs,
        total: Date.now() - began,
      },
      stderr_warnings: stderrs.flatMap((s) =>
        s.split("\n").filter((l) => /engine error|failed:|unhandled error|uncaught|panic/i.test(l))
      ),
    };
    failed = false;
    return summary;
  } catch (err) {
    const live = [...processes].map((p) => `--- stderr of pid ${p.pid} ---\n${p.stderr()}`);
    const kept = o.keep_on_failure ? `; kept ${dir.path}` : "";
    throw new Error(`${(err as Error).message}${kept}\n${live.join("\n")}`, { cause: err });
  } finally {
    for (const p of processes) await p[Symbol.asyncDispose]();
    if (!failed || !o.keep_on_failure) await dir[Symbol.asyncDispose]();
  }
}

/** Opens the KV file of the stopped process and checks every job, history, index and counter. */
async function verify(
  kvPath: string,
  ids: string[],
  payloads: { n: number; ms: number }[],
  apiStats: Json,
  outputs: string[],
  where: string,
) {
  const side = outputs.flatMap(sideLines);
  return await withKv(kvPath, async (kv) => {
    const list = async <T>(prefix: Deno.KvKey) =>
      await Array.fromAsync(kv.list<T>({ prefix }, { batchSize: 1000 }));

    // Every enqueued job exists, and no other.
    const jobs = new Map(
      (await list(["pulse", "job"])).map((e) => {
        const id = e.key[2] as string;
        return [id, decodeJob(id, e.value) as Json];
      }),
    );
    assert.equal(jobs.size, ids.length, `${where} job records`);
    assert.deepEqual([...jobs.keys()].sort(), [...ids].sort(), `${where} job ids`);

    // Histories, grouped by job: the entries in history keys (a key is named by the seq of its
    // first entry), then those still in the record.
    const events = new Map<string, Json[]>();
    const add = (id: string, entry: Json) => {
      if (!events.has(id)) events.set(id, []);
      events.get(id)!.push(entry);
    };
    for (const e of await list(["pulse", "events"])) {
      const id = e.key[2] as string;
      const group = decodeEvents(e.value);
      assert.equal(group[0].seq, e.key[3], `${where} history key ${id}/${String(e.key[3])}`);
      for (const entry of group) add(id, entry);
    }
    for (const [id, job] of jobs) for (const entry of recordHistory(job)) add(id, entry);
    assert.deepEqual([...events.keys()].sort(), [...ids].sort(), `${where} histories`);

    // Side effects, per job.
    const starts = new Map<string, number>(); // "id attempt" → count
    const dones = new Map<string, number>();
    const donesPerJob = new Map<string, number>();
    for (const l of side) {
      const k = `${l.id} ${l.attempt}`;
      const m = l.kind === "start" ? starts : dones;
      m.set(k, (m.get(k) ?? 0) + 1);
      if (l.kind === "done") donesPerJob.set(l.id, (donesPerJob.get(l.id) ?? 0) + 1);
      assert.ok(jobs.has(l.id), `${where} side effect for unknown job ${l.id}`);
    }
    // Claim once (invariant 2): an attempt number is started at most once, anywhere.
    for (const [k, n] of starts) assert.equal(n, 1, `${where} attempt "${k}" started ${n} times`);
    for (const [k, n] of dones) assert.equal(n, 1, `${where} attempt "${k}" finished ${n} times`);

    const recount: Record<string, number> = zeroCounts();
    let attempts = 0;
    let expires = 0;
    const index = new Map(ids.map((id, i) => [id, i]));
    for (const [id, job] of jobs) {
      const what = `${where} job ${id}: ${JSON.stringify(job)}`;
      recount[job.status]++;
      attempts += job.attempt;
      assert.deepEqual(job.payload, payloads[index.get(id)!], `${what}: payload`);
      assert.ok(job.status === "completed" || job.status === "failed", `${what}: status`);
      assert.equal(job.lease ?? null, null, `${what}: lease left`);
      if (job.status === "failed") {
        // Only expiries can fail a job here: the handler never throws unless aborted.
        assert.equal(job.retry_count, 2, `${what}: retry_count`);
        assert.equal(job.error_context?.stage, "lease", `${what}: error_context`);
      } else {
        assert.deepEqual(job.result, { n: payloads[index.get(id)!].n, attempt: job.attempt });
        // The attempt Pulse completed ran its handler to the end (printed start and done).
        assert.ok(starts.has(`${id} ${job.attempt}`), `${what}: no start line for the attempt`);
        assert.ok(dones.has(`${id} ${job.attempt}`), `${what}: no done line for the attempt`);
      }
      for (const l of side) {
        if (l.id === id) {
          assert.ok(
            l.attempt >= 1 && l.attempt <= job.attempt,
            `${what}: line attempt ${l.attempt}`,
          );
        }
      }

      // History (invariant 6): seq 1..event_seq without gaps, one chain of statuses.
      const h = events.get(id)!;
      assert.deepEqual(
        h.map((e) => e.seq),
        Array.from({ length: job.event_seq }, (_, i) => i + 1),
        `${what}: event seqs`,
      );
      assert.equal(h[0].event, "enqueue", `${what}: first event`);
      assert.equal(h[0].from, null);
      for (let i = 1; i < h.length; i++) {
        assert.equal(h[i].from, h[i - 1].to, `${what}: event ${h[i].seq} from`);
      }
      assert.equal(h.at(-1).to, job.status, `${what}: last event`);
      const count = (verb: string) => h.filter((e) => e.event === verb).length;
      assert.equal(count("complete"), job.status === "completed" ? 1 : 0, `${what}: completes`);
      assert.equal(count("claim"), job.attempt, `${what}: claims vs attempt`);
      assert.equal(count("expire"), job.retry_count + (job.status === "failed" ? 1 : 0), what);
      expires += count("expire");
    }

    // Most jobs completed: only a job killed in three of its attempts may fail.
    assert.ok(
      recount.completed >= Math.ceil(0.9 * ids.length),
      `${where} only ${recount.completed} of ${ids.length} completed`,
    );

    // Counters (invariant 3): the API's stats, the KV counters and the status index all equal
    // a recount over the job records.
    const total = Object.values(recount).reduce((a, b) => a + b, 0);
    assert.deepEqual(apiStats, { ...recount, total }, `${where} API stats vs recount`);
    const counters: Record<string, number> = {};
    for (const e of await list<Deno.KvU64>(["pulse", "stats"])) {
      const [status, dir] = [e.key[2] as string, e.key[3] as string];
      counters[status] = (counters[status] ?? 0) + (dir === "in" ? 1 : -1) * Number(e.value.value);
    }
    for (const s of Object.keys(recount)) {
      assert.equal(counters[s] ?? 0, recount[s], `${where} KV counter ${s}`);
      const indexed = (await list(["pulse", "by_status", s])).map((e) => e.key[3] as string);
      const expected = [...jobs].filter(([, j]) => j.status === s).map(([id]) => id);
      assert.deepEqual(indexed.sort(), expected.sort(), `${where} by_status index ${s}`);
    }
    assert.deepEqual(await list(["pulse", "ready"]), [], `${where} ready entries left`);
    assert.ok(jobs.values().every((j: Json) => TERMINAL.has(j.status)));

    return {
      completed: recount.completed,
      failed: recount.failed,
      attempts,
      expires,
      repeated_side_effects: [...donesPerJob.values()].filter((n) => n > 1).length,
      side_lines: side.length,
    };
  });
}
