/**
 * The pool's housekeeping loops: retention prunes finished jobs past their age; self-resume
 * (`govern`) resumes jobs paused for budget or rate as room appears.
 *
 * @module
 */
import type { RetentionAges } from "../store/mod.ts";
import type { PoolContext } from "./context.ts";
import { resumeWaiting } from "./resume.ts";

/** How often the retention loop looks for finished jobs to prune (clock ms). */
const RETENTION_EVERY_MS = 60_000;

/** Returns the retention and self-resume loops. `retention` null or absent keeps finished jobs. */
export function createMaintenance(ctx: PoolContext, retention?: RetentionAges) {
  const { store, clock, stopping, governWakeup } = ctx;

  /** Prunes finished jobs past their retention age, in rounds of 500. */
  async function retain() {
    const ages = retention;
    if (!ages) return;
    while (!stopping.signal.aborted) {
      const removed = await store.jobs.prune(clock.now(), ages, 500).catch((err) => {
        console.error("Retention round failed:", err);
        return 0;
      });
      if (removed < 500) await clock.sleep(RETENTION_EVERY_MS, stopping.signal);
    }
  }

  /** Resumes jobs paused for budget or rate as room appears (see resume.ts). */
  async function govern() {
    while (!stopping.signal.aborted) {
      const started = clock.now();
      const { next_at } = await resumeWaiting(store, () => clock.now()).catch((err) => {
        console.error("Self-resume round failed:", err);
        return { next_at: null };
      });
      // The deadline is absolute: time that passed during the round (a day that rolled over
      // while it read) does not lengthen the sleep; a deadline already past runs a round now.
      const at = Math.min(started + ctx.poll_interval_ms, next_at ?? Infinity);
      await governWakeup.wait(Math.max(0, at - clock.now()), stopping.signal);
    }
  }

  return { retain, govern };
}
