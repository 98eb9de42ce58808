/**
 * `deno task bench:compare`: the same no-op workload (20,000 queued jobs, concurrency 50) on
 * Pulse and on BullMQ with Redis, in one run, with Redis at `appendfsync always` (the durability
 * of a KV file, which fsyncs every commit) and `everysec`. Needs `redis-server` (installed with
 * apt-get when missing) and Node with npm (BullMQ is installed into a temp folder). Fails loudly
 * when either cannot be had. Not part of CI. Pulse (in its own process, as `deno task bench`
 * runs it) and BullMQ with `always` are run as 3 alternating pairs and the ratio is the median of
 * the pairs': the disk's speed moves by 2× within minutes here, and a pair shares its moment.
 */
import { median, phase } from "./lib.ts";

const N = Number(Deno.args.find((a) => a.startsWith("--n="))?.slice(4) ?? 20_000);
const C = 50;
const BULLMQ = ["bullmq@6.7.0", "ioredis@5.9.3"];

async function run(cmd: string, args: string[], options: Deno.CommandOptions = {}) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", ...options })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function has(cmd: string) {
  try {
    await run("which", [cmd]);
    return true;
  } catch {
    return false;
  }
}

async function ensureRedis() {
  if (await has("redis-server")) return;
  console.error("redis-server not found: installing it with apt-get");
  await run("apt-get", ["install", "-y", "-q", "redis-server"]).catch(async () => {
    await run("apt-get", ["update", "-q"]);
    await run("apt-get", ["install", "-y", "-q", "redis-server"]);
  });
}

function freePort() {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  return port;
}

/** Starts redis-server on loopback with AOF in the given fsync mode; resolves once it answers. */
async function startRedis(fsync: "always" | "everysec") {
  const dir = await Deno.makeTempDir({ prefix: "pulse-redis-" });
  const port = freePort();
  const child = new Deno.Command("redis-server", {
    args: [
      "--bind",
      "127.0.0.1",
      "--port",
      `${port}`,
      "--dir",
      dir,
      "--appendonly",
      "yes",
      "--appendfsync",
      fsync,
      "--save",
      "",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`redis-server did not start on port ${port}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function bullmq(dir: string, fsync: "always" | "everysec"): Promise<number> {
  const redis = await startRedis(fsync);
  try {
    const script = new URL("./bullmq_bench.mjs", import.meta.url).pathname;
    const out = await run("node", [script, dir, `${redis.port}`, `${N}`, `${C}`]);
    return JSON.parse(out.trim().split("\n").at(-1)!).jobs_per_s;
  } finally {
    await redis.stop();
  }
}

await ensureRedis();
if (!(await has("node")) || !(await has("npm"))) {
  throw new Error("Node and npm are needed for BullMQ");
}
const dir = await Deno.makeTempDir({ prefix: "pulse-bullmq-" });
console.error(`installing ${BULLMQ.join(", ")} into ${dir}`);
await run("npm", ["install", "--silent", "--no-audit", "--no-fund", "--prefix", dir, ...BULLMQ]);

const pairs: { pulse: number; always: number }[] = [];
for (let i = 0; i < 3; i++) {
  const pulse = (await phase("e2e", "--workers", C, "--n", N)).jobs_per_s;
  const always = await bullmq(dir, "always");
  console.error(
    `  pair ${i + 1}: Pulse ${pulse.toFixed(0)} jobs/s, BullMQ (always) ${always.toFixed(0)}`,
  );
  pairs.push({ pulse, always });
}
const everysec = await bullmq(dir, "everysec");
await Deno.remove(dir, { recursive: true });
const pulse = median(pairs.map((p) => p.pulse));
const always = median(pairs.map((p) => p.always));
const ratio = median(pairs.map((p) => p.pulse / p.always));

const out = {
  jobs: N,
  concurrency: C,
  pulse_jobs_per_s: pulse,
  bullmq_always_jobs_per_s: always,
  bullmq_everysec_jobs_per_s: everysec,
  ratio_to_bullmq_always: ratio,
  pairs,
  ratio_to_bullmq_everysec: pulse / everysec,
};
console.table({
  "Pulse (KV file)": { jobs_per_s: Math.round(pulse), ratio: 1 },
  "BullMQ, AOF always": { jobs_per_s: Math.round(always), ratio: +ratio.toFixed(2) },
  "BullMQ, AOF everysec": {
    jobs_per_s: Math.round(everysec),
    ratio: +(pulse / everysec).toFixed(2),
  },
});
console.log(JSON.stringify(out));
