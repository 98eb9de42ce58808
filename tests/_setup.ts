/**
 * Test world: a fresh in-memory KV, a manual clock, and one or more real Pulse instances over
 * that KV. `await using t = await setup(...)` closes everything at the end of the test.
 */
import { createManualClock, type ManualClock } from "../src/clock.ts";
import { type AnyHandler as Handler, createRegistry } from "../src/handlers/mod.ts";
import { createPulse, type Pulse, type PulseOptions } from "../src/pulse.ts";
import type { Job } from "../src/types.ts";

export interface World extends AsyncDisposable {
  kv: Deno.Kv;
  clock: ManualClock;
  pulse: Pulse;
  /** Builds another instance over the same KV (its own store, pool and app). */
  another(options?: Partial<PulseOptions>): Pulse;
  /** Calls the app of `pulse` (default: the first instance); JSON body in and out. */
  call(
    method: string,
    path: string,
    body?: unknown,
    pulse?: Pulse,
    // deno-lint-ignore no-explicit-any
  ): Promise<{ status: number; body: any }>;
  /** Polls the job until `until` holds, advancing the manual clock by `stepMs` each round. */
  waitFor(
    id: string,
    until: (job: Job) => boolean,
    options?: { stepMs?: number; rounds?: number },
  ): Promise<Job>;
}

export async function setup(
  handlers: Handler[],
  options: Partial<PulseOptions> & { start?: boolean } = {},
): Promise<World> {
  const kv = await Deno.openKv(":memory:");
  const clock = createManualClock();
  const registry = createRegistry(handlers);
  const instances: Pulse[] = [];
  const build = (o: Partial<PulseOptions> = {}) => {
    const p = createPulse({ kv, registry, clock, workers: 4, random: () => 0.5, ...options, ...o });
    instances.push(p);
    if (options.start !== false) p.start();
    return p;
  };
  const pulse = build();
  const call = async (method: string, path: string, body?: unknown, target = pulse) => {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = typeof body === "string" ? body : JSON.stringify(body);
      init.headers = { "content-type": "application/json" };
    }
    const res = await target.app.request(path, init);
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  return {
    kv,
    clock,
    pulse,
    another: build,
    call,
    async waitFor(id, until, { stepMs = 0, rounds = 2000 } = {}) {
      for (let i = 0; i < rounds; i++) {
        const job = await pulse.store.jobs.get(id);
        if (job && until(job)) return job;
        if (stepMs) clock.advance(stepMs);
        await new Promise((r) => setTimeout(r, 1)); // yield to the engine; not a timing assumption
      }
      throw new Error(`Job "${id}" did not reach the expected state in ${rounds} rounds`);
    },
    async [Symbol.asyncDispose]() {
      for (const p of instances) await p.stop();
      kv.close();
    },
  };
}
