/**
 * End to end, DESIGN invariants 2, 3 and 6 under crashes: `main.ts` is killed with SIGKILL at
 * 20 points while it works through 200 jobs and restarted on the same KV file each time; then
 * every job is finished exactly once, histories and counters agree. The scenario and its checks
 * live in `_crash.ts`, shared with the soak (`deno task soak`). Replay a failure with
 * `PULSE_CRASH_SEED=<seed> deno test -A tests/e2e_crash_test.ts` (add `PULSE_CRASH_KEEP=1` to keep
 * the KV file of a failed run for a post-mortem).
 */
import assert from "node:assert/strict";
import { runCrashScenario } from "./_crash.ts";

const SEED = Number(Deno.env.get("PULSE_CRASH_SEED") ?? 20_260_101);

Deno.test("main.ts survives kill -9 at 20 points without losing or duplicating a job", async () => {
  const summary = await runCrashScenario({
    jobs: 200,
    rounds: 20,
    seed: SEED,
    workers: 4,
    lease_ms: 600,
    lines: [3, 15],
    sleep_ms: [50, 200],
    finish_timeout_ms: 45_000,
    keep_on_failure: Deno.env.get("PULSE_CRASH_KEEP") === "1",
  });
  // Every round killed a process that still had work: the kill points were real.
  assert.equal(summary.idle_kills, 0, JSON.stringify(summary));
  assert.equal(summary.completed + summary.failed, 200);
  // The kills did interrupt work: some leases were lost and recovered.
  assert.ok(summary.expires > 0, `no lease expired: ${JSON.stringify(summary)}`);
  // No process reported engine trouble (a failed sweep, an outcome it could not commit).
  assert.deepEqual(summary.stderr_warnings, []);
});
