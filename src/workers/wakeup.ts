/**
 * A level-triggered wake-up: `notify()` before or during `wait()` ends the wait at once, so a
 * dispatcher never sleeps through new work; otherwise `wait(ms)` ends after `ms` of the clock.
 *
 * @module
 */
import type { Clock } from "../clock.ts";

export function createWakeup(clock: Clock) {
  let pending = false;
  let resolve: (() => void) | null = null;
  return {
    notify() {
      pending = true;
      resolve?.();
    },
    async wait(ms: number, signal?: AbortSignal) {
      if (pending || signal?.aborted) {
        pending = false;
        return;
      }
      const timer = new AbortController();
      const onAbort = () => timer.abort();
      signal?.addEventListener("abort", onAbort, { once: true });
      await new Promise<void>((r) => {
        resolve = r;
        clock.sleep(ms, timer.signal).then(r);
      });
      timer.abort();
      signal?.removeEventListener("abort", onAbort);
      resolve = null;
      pending = false;
    },
  };
}
