/**
 * Injected time. Production uses {@link systemClock}; tests use {@link createManualClock}, whose
 * sleepers wake only when the test advances it, so no test synchronises on real time.
 *
 * @module
 */

export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /** Resolves after `ms` of this clock's time, or at once when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The wall clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const timer = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener("abort", done, { once: true });
      function done() {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      }
    }),
};

export interface ManualClock extends Clock {
  /** Moves time forward and wakes every sleeper whose deadline has come. */
  advance(ms: number): void;
  set(epochMs: number): void;
  /** Number of sleepers waiting (lets a test know the engine went idle). */
  readonly sleepers: number;
}

/**
 * A clock that moves only when told.
 *
 * @example
 * ```ts
 * import { createManualClock } from "./clock.ts";
 * const clock = createManualClock(Date.UTC(2026, 0, 1));
 * const woke = clock.sleep(1000);
 * clock.advance(1000);
 * await woke;
 * ```
 */
export function createManualClock(start = Date.UTC(2026, 0, 1)): ManualClock {
  let now = start;
  const waiting = new Set<{ at: number; wake: () => void }>();
  const fire = () => {
    for (const w of [...waiting]) if (w.at <= now) w.wake();
  };
  return {
    now: () => now,
    sleep(ms, signal) {
      return new Promise((resolve) => {
        if (signal?.aborted) return resolve();
        const entry = { at: now + Math.max(0, ms), wake };
        function wake() {
          waiting.delete(entry);
          signal?.removeEventListener("abort", wake);
          resolve();
        }
        waiting.add(entry);
        signal?.addEventListener("abort", wake, { once: true });
        if (entry.at <= now) wake();
      });
    },
    advance(ms) {
      now += ms;
      fire();
    },
    set(epochMs) {
      now = epochMs;
      fire();
    },
    get sleepers() {
      return waiting.size;
    },
  };
}

/** RFC 3339 (UTC) text of an epoch-ms time. */
export function iso(ms: number): string {
  return new Date(ms).toISOString();
}
