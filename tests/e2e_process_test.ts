/**
 * End to end: `main.ts` as a real process. Handler discovery from a folder with good and bad
 * modules; graceful stop on SIGTERM (running jobs re-queued with their checkpoints, resumed at
 * the next start); and the KV file lock against a second process, released by kill -9.
 */
import assert from "node:assert/strict";
import { createStore, decodeJob } from "../src/store/mod.ts";
import { join } from "node:path";
import {
  Fatal,
  getJob,
  type Json,
  MOD_URL,
  poll,
  type PulseProcess,
  startHealthy,
  startPulse,
  tempDir,
  waitCompleted,
  withKv,
} from "./_process.ts";

/** A job's history as the API reads it (entries in history keys and in the record). */
const historyOf = (kv: Deno.Kv, id: string) => createStore({ kv, now: Date.now }).jobs.events(id);

const DEADLINE_MS = 60_000;

async function writeFile(path: string, text: string) {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeTextFile(path, text);
}

/** A handler module that imports the public module by its absolute file URL. */
const ECHO_HANDLER = `import { defineHandler, z } from ${JSON.stringify(MOD_URL)};
export default defineHandler({
  name: "e2e.echo",
  description: "Echoes its text",
  payload: z.object({ text: z.string() }),
  run: (ctx) => ({ echoed: ctx.payload.text, attempt: ctx.attempt }),
});
`;

/** Checkpoints `{ step: n }`, then waits until aborted and rethrows the abort reason. */
const WAIT_HANDLER = `import { defineHandler, z } from ${JSON.stringify(MOD_URL)};
export default defineHandler({
  name: "e2e.wait",
  description: "Checkpoints, then runs until aborted",
  payload: z.object({ n: z.number().int() }),
  async run(ctx) {
    await ctx.checkpoint({ step: ctx.payload.n });
    await new Promise((_resolve, reject) => {
      if (ctx.signal.aborted) return reject(ctx.signal.reason);
      ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
    });
  },
});
`;

/** The same handler after a deploy: completes from its checkpoint, refuses to start without. */
const RESUME_HANDLER = `import { defineHandler, PermanentError, z } from ${JSON.stringify(MOD_URL)};
export default defineHandler({
  name: "e2e.wait",
  description: "Completes from the checkpoint of an earlier attempt",
  payload: z.object({ n: z.number().int() }),
  run(ctx) {
    if (!ctx.lastCheckpoint) throw new PermanentError("no checkpoint to resume from");
    return { resumed_from: ctx.lastCheckpoint, attempt: ctx.attempt };
  },
});
`;

/** Checkpoints, then ignores its abort signal: only the stop timeout ends its attempt. */
const STUBBORN_HANDLER = `import { defineHandler, z } from ${JSON.stringify(MOD_URL)};
export default defineHandler({
  name: "e2e.stubborn",
  description: "Checkpoints, then never finishes and ignores aborts",
  payload: z.object({}),
  async run(ctx) {
    await ctx.checkpoint({ step: "started" });
    await new Promise(() => {});
  },
});
`;

async function enqueue(p: PulseProcess, handler_name: string, payload: unknown): Promise<string> {
  const res = await p.api("POST", "/api/pulse/jobs", { handler_name, payload });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.id;
}

Deno.test("main.ts discovers nested handlers and reports broken modules with their paths", async () => {
  await using dir = await tempDir("pulse_e2e_handlers_");
  await using state = await tempDir("pulse_e2e_discovery_kv_");
  const handlers = join(dir.path, "handlers");
  const good = join(handlers, "nested/deeper/echo.ts");
  const broken = join(handlers, "broken.ts");
  const notHandler = join(handlers, "nested/not_a_handler.ts");
  await writeFile(good, ECHO_HANDLER);
  await writeFile(broken, "export default defineHandler({ name: 'x', \n  run( {{{ ;\n");
  await writeFile(notHandler, 'export default { name: "e2e.fake", run: () => 1 };\n');
  // Helpers by the discovery rules: never loaded, so never reported.
  await writeFile(join(handlers, "_helper.ts"), "this is not TypeScript {{{\n");
  await writeFile(join(handlers, "echo_test.ts"), "this is not TypeScript {{{\n");

  await using p = await startHealthy({
    PULSE_KV_PATH: join(state.path, "pulse.sqlite"),
    PULSE_HANDLERS_DIR: handlers,
    PULSE_WORKERS: "2",
  }, { timeoutMs: DEADLINE_MS });

  const res = await p.api("GET", "/api/pulse/handlers");
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.handlers.map((h: Json) => h.name), ["e2e.echo"]);
  assert.equal(res.body.handlers[0].description, "Echoes its text");
  assert.equal(res.body.handlers[0].payload_schema.properties.text.type, "string");
  const errors: { path: string; message: string }[] = res.body.errors;
  assert.deepEqual(errors.map((e) => e.path).sort(), [broken, notHandler].sort());
  assert.match(errors.find((e) => e.path === notHandler)!.message, /not a defineHandler/);
  assert.ok(errors.every((e) => e.message.length > 0));

  // stderr names the broken file (read once it has been written: before the server listened).
  assert.ok(p.stderr().includes(broken), `stderr does not name ${broken}:\n${p.stderr()}`);
  assert.ok(p.stderr().includes(notHandler), `stderr does not name ${notHandler}`);

  const id = await enqueue(p, "e2e.echo", { text: "from a nested folder" });
  const job = await waitCompleted(p, id);
  assert.deepEqual(job.result, { echoed: "from a nested folder", attempt: 1 });

  const unknown = await p.api("POST", "/api/pulse/jobs", { handler_name: "e2e.fake" });
  assert.equal(unknown.status, 422);
  assert.equal(unknown.body.error.code, "unknown_handler");

  p.kill("SIGTERM");
  assert.equal((await p.waitExit(30_000)).code, 0, p.stderr());
});

Deno.test("main.ts on SIGTERM re-queues running jobs with their checkpoints; the next start resumes them", async () => {
  await using dir = await tempDir("pulse_e2e_stop_");
  const kvPath = join(dir.path, "pulse.sqlite");
  const waitDir = join(dir.path, "handlers_v1");
  const resumeDir = join(dir.path, "handlers_v2");
  await writeFile(join(waitDir, "wait.ts"), WAIT_HANDLER);
  await writeFile(join(resumeDir, "wait.ts"), RESUME_HANDLER);
  const STOP_TIMEOUT_MS = 3000;
  const MARGIN_MS = 2000;

  const ids: string[] = [];
  {
    await using p = await startHealthy({
      PULSE_KV_PATH: kvPath,
      PULSE_HANDLERS_DIR: waitDir,
      PULSE_WORKERS: "4",
      PULSE_STOP_TIMEOUT_MS: String(STOP_TIMEOUT_MS),
    }, { timeoutMs: DEADLINE_MS });
    for (let n = 1; n <= 4; n++) ids.push(await enqueue(p, "e2e.wait", { n }));

    // All four running, each with its checkpoint written.
    await poll("4 jobs running with checkpoints", async () => {
      const jobs = await Promise.all(ids.map((id) => getJob(p, id)));
      const bad = jobs.find((j) => !["queued", "running"].includes(j.status));
      if (bad) throw new Fatal(new Error(`job ended ${bad.status}: ${JSON.stringify(bad)}`));
      return jobs.every((j) => j.status === "running" && j.checkpoint) ? jobs : undefined;
    }, { timeoutMs: DEADLINE_MS });
    const stats = await p.api("GET", "/api/pulse/stats");
    assert.equal(stats.body.running, 4);

    const signalled = Date.now();
    p.kill("SIGTERM");
    const status = await p.waitExit(STOP_TIMEOUT_MS + MARGIN_MS + 5000);
    const took = Date.now() - signalled;
    assert.equal(status.code, 0, `exit code; stderr:\n${p.stderr()}`);
    assert.ok(
      took <= STOP_TIMEOUT_MS + MARGIN_MS,
      `exit took ${took} ms, more than ${STOP_TIMEOUT_MS} + ${MARGIN_MS}`,
    );
    // The handlers end on their abort signal at once, so the stop need not wait the timeout.
    assert.ok(took < STOP_TIMEOUT_MS, `exit took ${took} ms: were the handlers not aborted?`);
  }

  await withKv(kvPath, async (kv) => {
    for (const [i, id] of ids.entries()) {
      const job = decodeJob(id, (await kv.get(["pulse", "job", id])).value) as Json;
      assert.ok(job, `job ${id} missing`);
      assert.equal(job.status, "queued", `job ${id}`);
      assert.deepEqual(job.checkpoint, { step: i + 1 });
      assert.equal(job.retry_count, 0);
      assert.equal(job.attempt, 1);
      assert.equal(job.lease, null);
      assert.deepEqual(
        (await historyOf(kv, id)).map((e) => e.event),
        ["enqueue", "claim", "requeue"],
        `history of ${id}`,
      );
      const ready = await Array.fromAsync(kv.list({ prefix: ["pulse", "ready"] }));
      const entry = ready.find((e) => e.key.at(-1) === id);
      assert.ok(entry, `job ${id} not in the ready index`);
      assert.deepEqual(decodeJob(id, entry.value), job, `the ready key of ${id} holds its record`);
    }
    const running = await Array.fromAsync(kv.list({ prefix: ["pulse", "by_status", "running"] }));
    assert.equal(running.length, 0);
  });

  // The next start, with the new version of the handler, finishes all four.
  await using p2 = await startHealthy({
    PULSE_KV_PATH: kvPath,
    PULSE_HANDLERS_DIR: resumeDir,
    PULSE_WORKERS: "4",
    PULSE_STOP_TIMEOUT_MS: String(STOP_TIMEOUT_MS),
  }, { timeoutMs: DEADLINE_MS });
  for (const [i, id] of ids.entries()) {
    const job = await waitCompleted(p2, id);
    assert.deepEqual(job.result, { resumed_from: { step: i + 1 }, attempt: 2 });
    assert.equal(job.retry_count, 0);
  }
  const stats = await p2.api("GET", "/api/pulse/stats");
  assert.deepEqual(stats.body, {
    queued: 0,
    running: 0,
    paused: 0,
    completed: 4,
    failed: 0,
    cancelled: 0,
    total: 4,
  });
  p2.kill("SIGTERM");
  assert.equal((await p2.waitExit(30_000)).code, 0, p2.stderr());
});

Deno.test("main.ts on SIGTERM re-queues a job that ignores its abort once the stop timeout passes", async () => {
  await using dir = await tempDir("pulse_e2e_stubborn_");
  const kvPath = join(dir.path, "pulse.sqlite");
  const handlers = join(dir.path, "handlers");
  await writeFile(join(handlers, "stubborn.ts"), STUBBORN_HANDLER);
  const STOP_TIMEOUT_MS = 1500;
  const MARGIN_MS = 2000;

  await using p = await startHealthy({
    PULSE_KV_PATH: kvPath,
    PULSE_HANDLERS_DIR: handlers,
    PULSE_STOP_TIMEOUT_MS: String(STOP_TIMEOUT_MS),
  }, { timeoutMs: DEADLINE_MS });
  const id = await enqueue(p, "e2e.stubborn", {});
  await poll("the job running with its checkpoint", async () => {
    const job = await getJob(p, id);
    return job.status === "running" && job.checkpoint ? job : undefined;
  }, { timeoutMs: DEADLINE_MS });

  const signalled = Date.now();
  p.kill("SIGTERM");
  const status = await p.waitExit(STOP_TIMEOUT_MS + MARGIN_MS + 5000);
  const took = Date.now() - signalled;
  assert.equal(status.code, 0, `exit code; stderr:\n${p.stderr()}`);
  // It waited for the handler (the whole stop timeout), then no longer than the margin.
  assert.ok(took >= STOP_TIMEOUT_MS, `exit took ${took} ms, less than the stop timeout`);
  assert.ok(took <= STOP_TIMEOUT_MS + MARGIN_MS, `exit took ${took} ms`);

  await withKv(kvPath, async (kv) => {
    const job = decodeJob(id, (await kv.get(["pulse", "job", id])).value) as Json;
    assert.equal(job.status, "queued");
    assert.deepEqual(job.checkpoint, { step: "started" });
    assert.equal(job.retry_count, 0);
    assert.equal(job.lease, null);
    assert.deepEqual(
      (await historyOf(kv, id)).map((e) => e.event),
      ["enqueue", "claim", "requeue"],
    );
  });
});

/** Hangs on its first attempt (until the process dies); completes on any later attempt. */
const CRASHY_HANDLER = `import { defineHandler, z } from ${JSON.stringify(MOD_URL)};
export default defineHandler({
  name: "e2e.crashy",
  description: "Hangs on attempt 1, completes on a later one",
  payload: z.object({}),
  async run(ctx) {
    if (ctx.attempt === 1) {
      await ctx.checkpoint({ hung: true });
      await new Promise(() => {});
    }
    return { attempt: ctx.attempt, checkpoint: ctx.lastCheckpoint };
  },
});
`;

/** Waits until `p` exits or says it listens; asserts that it exited, with a non-zero code. */
async function assertRefused(p: PulseProcess, what: string) {
  await poll(
    `${what} to exit or listen`,
    () => p.exited || p.stdout().includes("Pulse listening") ? true : undefined,
    { timeoutMs: DEADLINE_MS },
  );
  assert.equal(p.exited, true, `${what} is serving:\n${p.stdout()}`);
  const status = await p.waitExit(DEADLINE_MS);
  assert.notEqual(status.code, 0, `${what} exited with code 0`);
}

Deno.test("main.ts refuses a second process on the same KV file; kill -9 frees it at once", async () => {
  await using dir = await tempDir("pulse_e2e_lock_");
  const kvPath = join(dir.path, "pulse.sqlite");
  const handlers = join(dir.path, "handlers");
  await writeFile(join(handlers, "echo.ts"), ECHO_HANDLER);
  await writeFile(join(handlers, "crashy.ts"), CRASHY_HANDLER);
  const env = {
    PULSE_KV_PATH: kvPath,
    PULSE_HANDLERS_DIR: handlers,
    PULSE_WORKERS: "2",
    // Short leases, so the job the crash leaves running is recovered within the test.
    PULSE_LEASE_MS: "1000",
  };

  await using first = await startHealthy(env, { timeoutMs: DEADLINE_MS });

  {
    await using second = startPulse(env);
    await assertRefused(second, "a second process on the same KV file");
    assert.ok(
      second.stderr().includes(kvPath),
      `stderr does not name ${kvPath}:\n${second.stderr()}`,
    );
    assert.match(second.stderr(), /in use by another Pulse process/);
  }

  // The same file through a symlink is the same file: refused too, naming the real file.
  const alias = join(dir.path, "alias.sqlite");
  await Deno.symlink(kvPath, alias);
  {
    await using viaLink = startPulse({ ...env, PULSE_KV_PATH: alias });
    await assertRefused(viaLink, "a process on a symlink to the KV file");
    assert.ok(viaLink.stderr().includes(kvPath), `stderr does not name ${kvPath}`);
  }

  // The first keeps serving and working.
  const health = await first.api("GET", "/healthz");
  assert.equal(health.status, 200);
  const id = await enqueue(first, "e2e.echo", { text: "still here" });
  assert.deepEqual((await waitCompleted(first, id)).result, { echoed: "still here", attempt: 1 });
  assert.equal(first.exited, false);

  // A job is running when the first dies.
  const hung = await enqueue(first, "e2e.crashy", {});
  await poll("the crashy job running with its checkpoint", async () => {
    const job = await getJob(first, hung);
    return job.status === "running" && job.checkpoint ? true : undefined;
  }, { timeoutMs: DEADLINE_MS });

  // kill -9: no graceful stop, no unlock by the process; the OS drops the lock.
  first.kill("SIGKILL");
  const killed = await first.waitExit(30_000);
  assert.equal(killed.signal, "SIGKILL");

  await using third = await startHealthy(env, { timeoutMs: DEADLINE_MS });
  assert.doesNotMatch(third.stderr(), /in use by another Pulse process/);
  // The job completed before the crash is still there.
  assert.equal((await getJob(third, id)).status, "completed");
  // The job the crash left running is expired once its lease runs out, and finishes.
  const recovered = await waitCompleted(third, hung);
  assert.deepEqual(recovered.result, { attempt: 2, checkpoint: { hung: true } });
  const events = await third.api("GET", `/api/pulse/jobs/${hung}/events`);
  assert.deepEqual(
    events.body.events.map((e: Json) => e.event),
    ["enqueue", "claim", "expire", "claim", "complete"],
  );
  third.kill("SIGTERM");
  assert.equal((await third.waitExit(30_000)).code, 0, third.stderr());
});
