/**
 * Self-resume: jobs paused for budget or rate go back to the queue, oldest first, as soon as
 * room appears (the window reopens, the day or month rolls over in the budget's time zone, a
 * limit is raised, or a reservation is released). `user_requested` pauses are never touched.
 *
 * @module
 */
import { budgetState, toMicros, WINDOW_MS } from "../pulse/mod.ts";
import type { Store } from "../store/mod.ts";
import type { Job } from "../types.ts";

/** Jobs looked at per round; the rest wait for the next round. */
const PAGE = 200;

/**
 * One round: resumes the waiting jobs that fit the current room. Returns how many resumed and
 * when the rate window next opens (null when nothing waits on it).
 */
export async function resumeWaiting(store: Store, now: () => number) {
  const waiting = await store.governor.waiting(PAGE);
  if (!waiting.length) return { resumed: 0, next_at: null };
  const snap = await store.governor.snapshot();
  const b = budgetState(snap);
  let money = b.budget_remaining === null ? Infinity : toMicros(b.budget_remaining);
  let calls = b.calls_remaining ?? Infinity;
  const jobs = await store.jobs.getMany(waiting.map((w) => w.id));
  const chosen: Job[] = [];
  let rateBlocked = false;
  for (const job of jobs) {
    const reason = job?.status === "paused" ? job.pulse_state?.pause_reason : undefined;
    if (!job || !reason) continue;
    if (reason === "budget_exceeded") {
      const need = Math.max(1, toMicros(job.cost_estimate));
      if (need > money) continue; // a smaller, younger job may still fit
      money -= need;
      chosen.push(job);
    } else if (reason === "rate_limit") {
      if (calls < 1) {
        rateBlocked = true;
        continue;
      }
      calls -= 1;
      chosen.push(job);
    }
  }
  let resumed = 0;
  for (let i = 0; i < chosen.length; i += 50) {
    const outcomes = await store.transitions.apply(
      chosen.slice(i, i + 50).map((job) => ({
        id: job.id,
        unless: (j: Job) =>
          j.status === "paused" && j.pulse_state?.pause_reason === job.pulse_state?.pause_reason
            ? null
            : `Job "${j.id}" is no longer waiting`,
        event: () => ({ type: "resume" as const, now: now(), reason: "Room appeared" }),
      })),
    );
    resumed += outcomes.filter((o) => o.ok).length;
  }
  const live = snap.window.filter((t) => t > snap.now - WINDOW_MS);
  const next_at = rateBlocked && live.length ? Math.min(...live) + WINDOW_MS : null;
  return { resumed, next_at };
}
