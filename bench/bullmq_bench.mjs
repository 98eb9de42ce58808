// Node script run by bench/compare.ts: the same no-op workload on BullMQ.
// node bullmq_bench.mjs <bullmq module dir> <redis port> <jobs> <concurrency>
import { createRequire } from "node:module";
const [dir, port, n, concurrency] = process.argv.slice(2);
const { Queue, Worker } = createRequire(`${dir}/package.json`)("bullmq");
const connection = { host: "127.0.0.1", port: Number(port), maxRetriesPerRequest: null };
const N = Number(n);
const queue = new Queue("bench", { connection });
await queue.obliterate({ force: true }).catch(() => {});
for (let i = 0; i < N; i += 1000) {
  const jobs = Array.from({ length: Math.min(1000, N - i) }, (_, k) => ({
    name: "noop",
    data: { i: i + k },
    opts: { removeOnComplete: true, removeOnFail: true },
  }));
  await queue.addBulk(jobs);
}
let done = 0;
let t0 = 0;
const finished = new Promise((resolve) => {
  const worker = new Worker("bench", () => {
    if (!t0) t0 = performance.now();
    return Promise.resolve();
  }, { connection, concurrency: Number(concurrency), autorun: true });
  worker.on("completed", () => {
    if (++done === N) resolve(worker);
  });
});
const worker = await finished;
const seconds = (performance.now() - t0) / 1000;
console.log(JSON.stringify({ jobs: N, concurrency: Number(concurrency), jobs_per_s: N / seconds }));
await worker.close();
await queue.close();
