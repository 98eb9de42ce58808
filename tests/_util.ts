/** Small helpers shared by tests. */
import { JOB_STATUSES, type JobStatus } from "../src/types.ts";

/** The largest number of instants inside any 60-second window [t, t + 60 s). */
export function busiestMinute(times: readonly number[]): number {
  const s = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < s.length; i++) {
    while (j < s.length && s[j] < s[i] + 60_000) j++;
    best = Math.max(best, j - i);
  }
  return best;
}

/** A count of 0 for every job status, to recount jobs into. */
export function zeroCounts(): Record<JobStatus, number> {
  return Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<JobStatus, number>;
}

/** A KV handle whose `n`-th atomic commit (1-based) runs `after` once it has committed. */
export function afterCommit(kv: Deno.Kv, n: number, after: () => Promise<void>): Deno.Kv {
  let commits = 0;
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            const res = await commit();
            if (++commits === n) await after();
            return res;
          };
          return op;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
