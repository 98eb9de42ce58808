/**
 * Crash soak: the scenario of `tests/e2e_crash_test.ts` at a larger scale, with the same checks
 * (`tests/_crash.ts`). `main.ts` is killed with SIGKILL at `--rounds` points while it works
 * through `--jobs` jobs, restarted on the same KV file each time, then left to finish; the KV
 * file is then checked job by job. Prints a summary; exits non-zero on any violation.
 *
 *     deno task soak                                   # 100 rounds, 1000 jobs
 *     deno task soak --rounds 300 --jobs 3000 --seed 7
 *
 * Not a test file (no `_test` in the name, outside tests/), so `deno test tests/` skips it.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { runCrashScenario } from "../tests/_crash.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "100" },
    jobs: { type: "string", default: "1000" },
    seed: { type: "string", default: String(Date.now() % 1_000_000_000) },
    workers: { type: "string", default: "4" },
    "lease-ms": { type: "string", default: "600" },
  },
});
const num = (name: keyof typeof values) => {
  const n = Number(values[name]);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(`--${name} must be a positive integer, got "${values[name]}"`);
    Deno.exit(2);
  }
  return n;
};
const options = {
  rounds: num("rounds"),
  jobs: num("jobs"),
  seed: num("seed"),
  workers: num("workers"),
  lease_ms: num("lease-ms"),
};
console.log(`crash soak: ${JSON.stringify(options)}`);
const t0 = Date.now();
try {
  const s = await runCrashScenario({
    ...options,
    finish_timeout_ms: 300_000,
    keep_on_failure: true,
    log: (line) => console.log(`  [${((Date.now() - t0) / 1000).toFixed(1)} s] ${line}`),
  });
  const pct = (n: number) => `${((100 * n) / s.jobs).toFixed(1)}%`;
  console.log(
    [
      `crash soak PASSED (seed ${s.seed})`,
      `  kills (SIGKILL + restart): ${s.rounds} (${s.idle_kills} with nothing left to run)`,
      `  jobs: ${s.jobs}: completed ${s.completed} (${pct(s.completed)}), ` +
      `failed after 3 lost leases ${s.failed} (${pct(s.failed)})`,
      `  attempts: ${s.attempts} (${(s.attempts / s.jobs).toFixed(2)} per job), ` +
      `lease expiries: ${s.expires}`,
      `  side-effect lines: ${s.side_lines}; jobs whose handler finished more than once ` +
      `(killed before the commit, at-least-once): ${s.repeated_side_effects}`,
      `  final stats: ${JSON.stringify(s.stats)}`,
      `  restart to healthy: min ${s.restart_ms.min} ms, avg ${s.restart_ms.avg} ms, ` +
      `max ${s.restart_ms.max} ms`,
      `  time: enqueue ${s.took_ms.enqueue} ms, rounds ${s.took_ms.rounds} ms, ` +
      `finish ${s.took_ms.finish} ms, verify ${s.took_ms.verify} ms, total ${s.took_ms.total} ms`,
      `  stderr warnings: ${s.stderr_warnings.length ? "\n    " : "none"}${
        s.stderr_warnings.join("\n    ")
      }`,
    ].join("\n"),
  );
} catch (err) {
  console.error(`crash soak FAILED (seed ${options.seed}) after ${Date.now() - t0} ms`);
  console.error(err);
  Deno.exit(1);
}
