import assert from "node:assert/strict";
import { defineHandler, z } from "../src/mod.ts";
import type { Job } from "../src/types.ts";
import { setup, type World } from "./_setup.ts";

const DAY = 24 * 3600 * 1000;

/** A job that costs what it estimates: one admitted call, then the spend recorded. */
const spend = defineHandler({
  name: "test.spend",
  description: "Spends its payload's cost",
  payload: z.object({ usd: z.number() }),
  estimateCost: (p) => p.usd,
  async run(ctx) {
    await ctx.pulse.call({ cost_usd: ctx.payload.usd });
    await ctx.recordCost(ctx.payload.usd);
    return { spent: ctx.payload.usd };
  },
});

async function all(t: World): Promise<Job[]> {
  const page = await t.pulse.store.jobs.list({}, 1000);
  return page.jobs;
}

/** Polls (bounded) until `until` holds for the job list; the clock is moved only by the test. */
async function settle(t: World, until: (jobs: Job[]) => boolean): Promise<Job[]> {
  for (let i = 0; i < 3000; i++) {
    const jobs = await all(t);
    if (until(jobs)) return jobs;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error("Jobs did not settle");
}

const count = (jobs: Job[], status: string) => jobs.filter((j) => j.status === status).length;

Deno.test("a $1.00 daily budget runs exactly 10 jobs of $0.10 a day and finishes 50 in 5 days", async () => {
  await using t = await setup([spend]);
  const put = await t.call("PUT", "/api/pulse/budget", { daily_budget_usd: 1 });
  assert.equal(put.status, 200);
  for (let i = 0; i < 50; i++) {
    const r = await t.call("POST", "/api/pulse/jobs", {
      handler_name: "test.spend",
      payload: { usd: 0.1 },
    });
    assert.equal(r.status, 201);
  }
  for (let day = 1; day <= 5; day++) {
    const jobs = await settle(
      t,
      (js) =>
        count(js, "completed") === 10 * day && count(js, "running") === 0 &&
        count(js, "queued") === 0 && count(js, "paused") === 50 - 10 * day,
    );
    for (const j of jobs.filter((j) => j.status === "paused")) {
      assert.equal(j.pulse_state?.pause_reason, "budget_exceeded");
    }
    const budget = await t.call("GET", "/api/pulse/budget");
    assert.equal(budget.body.spend_today, 1, `day ${day}: spend is exactly $1.00`);
    assert.equal(budget.body.reserved_today, 0);
    assert.equal(budget.body.budget_remaining, 0);
    t.clock.advance(DAY);
  }
  const jobs = await all(t);
  assert.equal(count(jobs, "completed"), 50);
  const perDay = new Map<string, number>();
  for (const j of jobs) perDay.set(j.reservation!.day, (perDay.get(j.reservation!.day) ?? 0) + 1);
  assert.deepEqual([...perDay.values()], [10, 10, 10, 10, 10]);
  assert.ok(jobs.every((j) => j.cost_actual === 0.1));
});
