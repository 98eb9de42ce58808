/** `deno run -A --cpu-prof bench/profile.ts`: one end-to-end run, for a CPU profile. */
import { fill, openBench, until } from "./lib.ts";
const n = Number(Deno.args[0] ?? 10_000);
const b = await openBench(50, { start: false });
await fill(b.pulse, n);
const t0 = performance.now();
b.pulse.start();
await until(async () => (await b.pulse.store.stats.read()).completed === n, 600_000, 20);
console.log(`${(n / ((performance.now() - t0) / 1000)).toFixed(0)} jobs/s`);
await b.close();
