/**
 * Process helpers for end-to-end tests: start `main.ts` as a real child process on a free
 * 127.0.0.1 port, keep its output drained, call its HTTP API, poll with deadlines, and always
 * kill it, even when the test fails (`await using p = await startHealthy({...})`).
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (the folder that holds main.ts and deno.json). */
export const REPO_ROOT = dirname(fileURLToPath(new URL("../main.ts", import.meta.url)));
export const MAIN_TS = join(REPO_ROOT, "main.ts");
/** Absolute file URL of the public handler module, for handler files written to temp dirs. */
export const MOD_URL = new URL("../src/mod.ts", import.meta.url).href;

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Resolves after `ms`: only as the pause between two polls, never as synchronisation. */
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface PollOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/**
 * Calls `probe` every `intervalMs` until it returns a value other than `undefined`, or throws
 * when the deadline passes (naming the last error). An error the probe throws is retried (e.g.
 * a refused connection), except a {@link Fatal}, which ends the polling at once.
 */
export async function poll<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  { timeoutMs = 60_000, intervalMs = 50 }: PollOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = undefined;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof Fatal) throw err.cause;
      last = err;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: last error ${last.message}` : "";
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await pause(intervalMs);
  }
}

/** Thrown inside a {@link poll} probe to stop polling and rethrow `cause`. */
export class Fatal extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

// deno-lint-ignore no-explicit-any
export type Json = any;

export interface PulseProcess extends AsyncDisposable {
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  /** Everything the child wrote to stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit status once the child has exited and its output is drained. */
  readonly status: Promise<Deno.CommandStatus>;
  readonly exited: boolean;
  kill(signal?: Deno.Signal): void;
  /** Waits for the exit, at most `timeoutMs`; throws on timeout. */
  waitExit(timeoutMs?: number): Promise<Deno.CommandStatus>;
  /** Polls GET /healthz until 200; throws when the child exits first or the deadline passes. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** One JSON request to the child's API. */
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: Json }>;
}

/** Environment of the test process minus every Pulse variable, so a stray one cannot leak in. */
function baseEnv(): Record<string, string> {
  const ours = (k: string) => k.startsWith("PULSE_") || k === "PORT" || k === "DENO_DEPLOYMENT_ID";
  return Object.fromEntries(Object.entries(Deno.env.toObject()).filter(([k]) => !ours(k)));
}

/**
 * Starts `deno run -A main.ts` in the repository root with `env` (PORT is added when absent).
 * The child's output is read in the background so it never blocks on a full pipe.
 */
export function startPulse(env: Record<string, string>): PulseProcess {
  const port = env.PORT ? Number(env.PORT) : freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN_TS],
    cwd: REPO_ROOT,
    clearEnv: true,
    env: { ...baseEnv(), NO_COLOR: "1", ...env, PORT: String(port) },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = { stdout: "", stderr: "" };
  const drained = Promise.all([
    drain(child.stdout, (s) => out.stdout += s),
    drain(child.stderr, (s) => out.stderr += s),
  ]);
  let exited = false;
  const status = child.status.then(async (s) => {
    exited = true;
    await drained;
    return s;
  });
  const url = `http://127.0.0.1:${port}`;

  const proc: PulseProcess = {
    port,
    url,
    pid: child.pid,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    status,
    get exited() {
      return exited;
    },
    kill(signal: Deno.Signal = "SIGTERM") {
      if (!exited) child.kill(signal);
    },
    async waitExit(timeoutMs = 30_000) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`pid ${child.pid} did not exit within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        return await Promise.race([status, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    async waitHealthy(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      const left = () => Math.max(1, deadline - Date.now());
      // First the child's own "listening" line, so a port another process answers on (or a
      // connection to a port nobody listens on yet) can never pass for this child's health.
      const listening = `Pulse listening on ${url} `;
      await poll(`"${listening.trim()}" on stdout`, async () => {
        if (out.stdout.includes(listening)) return true;
        if (exited) {
          const s = await status;
          const Err = /AddrInUse|address already in use/i.test(out.stderr) ? PortTaken : Error;
          throw new Fatal(
            new Err(`main.ts exited with code ${s.code} before it was healthy:\n${describe()}`),
          );
        }
        return undefined;
      }, { timeoutMs: left(), intervalMs: 20 });
      await poll(`GET ${url}/healthz = 200`, async () => {
        if (exited) throw new Fatal(new Error(`main.ts exited before healthz:\n${describe()}`));
        const res = await fetch(`${url}/healthz`);
        await res.body?.cancel();
        return res.status === 200 ? true : undefined;
      }, { timeoutMs: left(), intervalMs: 20 });
    },
    async api(method, path, body) {
      const init: RequestInit = { method };
      if (body !== undefined) {
        init.body = JSON.stringify(body);
        init.headers = { "content-type": "application/json" };
      }
      let res: Response;
      try {
        res = await fetch(`${url}${path}`, init);
      } catch (err) {
        const cause = (err as Error).cause instanceof Error ? (err as Error).cause : err;
        throw new Error(
          `${method} ${url}${path} failed: ${(cause as Error).message ?? cause} ` +
            `(main.ts pid ${child.pid} ${exited ? "has exited" : "is running"})\n${describe()}`,
          { cause: err },
        );
      }
      const text = await res.text();
      let parsed: Json = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
      return { status: res.status, body: parsed };
    },
    async [Symbol.asyncDispose]() {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch {
          // Exited between the check and the kill.
        }
      }
      await status;
    },
  };
  function describe() {
    return `--- stdout ---\n${out.stdout}\n--- stderr ---\n${out.stderr}`;
  }
  return proc;
}

/** The child could not listen: its port was taken between {@link freePort} and its start. */
export class PortTaken extends Error {}

/**
 * Starts main.ts and waits until it is healthy; on a port taken by another process in the
 * meantime, starts again on another free port (at most `attempts` times).
 */
export async function startHealthy(
  env: Record<string, string>,
  { timeoutMs = 60_000, attempts = 3 } = {},
): Promise<PulseProcess> {
  for (let i = 1;; i++) {
    const p = startPulse(env);
    try {
      await p.waitHealthy(timeoutMs);
      return p;
    } catch (err) {
      await p[Symbol.asyncDispose]();
      if (!(err instanceof PortTaken) || i >= attempts || env.PORT) throw err;
    }
  }
}

async function drain(stream: ReadableStream<Uint8Array>, append: (s: string) => void) {
  const decoder = new TextDecoder();
  for await (const chunk of stream) append(decoder.decode(chunk, { stream: true }));
  append(decoder.decode());
}

/** A fresh temp dir, removed (recursively) on dispose. */
export async function tempDir(prefix = "pulse_e2e_"): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.realPath(await Deno.makeTempDir({ prefix }));
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Every item of a paged list route (`{ jobs, next_cursor }`), following `next_cursor`. */
export async function listAll(
  p: PulseProcess,
  path: string,
  limit = 100,
): Promise<Json[]> {
  const jobs: Json[] = [];
  const sep = path.includes("?") ? "&" : "?";
  let cursor: string | null = null;
  let pages = 0;
  do {
    const q: string = `${sep}limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`;
    const res = await p.api("GET", `${path}${q}`);
    if (res.status !== 200) {
      throw new Error(`GET ${path}${q}: ${res.status} ${JSON.stringify(res.body)}`);
    }
    jobs.push(...res.body.jobs);
    cursor = res.body.next_cursor;
    if (++pages > 10_000) throw new Error(`GET ${path}: more than 10000 pages`);
  } while (cursor);
  return jobs;
}

/** Opens the KV file at `path`, runs `fn` and always closes it. */
export async function withKv<T>(path: string, fn: (kv: Deno.Kv) => Promise<T>): Promise<T> {
  const kv = await Deno.openKv(path);
  try {
    return await fn(kv);
  } finally {
    kv.close();
  }
}

/** The job as the API answers it (asserts 200). */
export async function getJob(p: PulseProcess, id: string): Promise<Json> {
  const res = await p.api("GET", `/api/pulse/jobs/${id}`);
  if (res.status !== 200) {
    throw new Error(`GET job ${id}: ${res.status} ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

/** Polls the job until `completed`; fails at once when it ends any other way. */
export function waitCompleted(p: PulseProcess, id: string, timeoutMs = 60_000): Promise<Json> {
  return poll(`job ${id} completed`, async () => {
    const job = await getJob(p, id);
    if (job.status === "failed" || job.status === "cancelled") {
      throw new Fatal(new Error(`job ${id} ended ${job.status}: ${JSON.stringify(job)}`));
    }
    return job.status === "completed" ? job : undefined;
  }, { timeoutMs, intervalMs: 50 });
}
