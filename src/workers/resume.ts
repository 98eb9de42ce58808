/**
 * Self-resume: jobs paused for budget or rate go back to the queue, oldest first, as soon as
 * room appears (the window reopens, the day or month rolls over in the budget's time zone, a
 * limit is raised, or a reservation is released). `user_requested` pauses are never touched.
 *
 * @module
 */
import { budgetState, live, toMicros, WINDOW_MS } from "../pulse/mod.ts";
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
  // Instants at which a window that holds a job back reopens (the global or a handler's own).
  const reopens: number[] = [];
  const reopen = (window: readonly number[]) => {
    const inWindow = live(window, snap.now);
    if (inWindow.length) reopens.push(Math.min(...inWindow) + WINDOW_MS);
  };
  // Calls left in each handler's own window (`handler_limits`), read once per round.
  const own = new Map<string, { left: number; window: number[] }>();
  const ownRoom = async (handler: string) => {
    let room = own.get(handler);
    if (!room) {
      const limit = snap.limits.handler_limits[handler]?.max_calls_per_minute ?? null;
      const window = limit === null ? [] : await store.governor.handlerWindow(handler);
      const left = limit === null ? Infinity : Math.max(0, limit - live(window, snap.now).length);
      room = { left, window };
      own.set(handler, room);
    }
    return room;
  };
  for (const job of jobs) {
    const reason = job?.status === "paused" ? job.pulse_state?.pause_reason : undefined;
    if (!job || !reason) continue;
    if (reason === "budget_exceeded") {
      // The estimate, or more when a call that did not fit needed more.
      const need = Math.max(1, toMicros(job.cost_estimate), job.reservation?.needed_micros ?? 0);
      if (need > money) continue; // a smaller, younger job may still fit
      money -= need;
      chosen.push(job);
    } else if (reason === "rate_limit") {
      const handler = await ownRoom(job.handler_name);
      if (calls < 1 || handler.left < 1) {
        if (calls < 1) reopen(snap.window);
        if (handler.left < 1) reopen(handler.window);
        continue;
      }
      calls -= 1;
      handler.left -= 1;
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
  const next_at = reopens.length ? Math.min(...reopens) : null;
  return { resumed, next_at };
}
