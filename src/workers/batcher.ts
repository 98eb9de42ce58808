/**
 * Group commit: outcomes submitted while a commit is in flight ride together in the next one.
 * An idle batcher starts its commit one macrotask later, so outcomes settled in the same turn
 * of the event loop (a claimed batch of no-op jobs ends together) share it; under load up to
 * `max` share one atomic commit, which is what a KV file is fast at (DESIGN invariant 10).
 *
 * @module
 */

export function createBatcher<T, R>(flush: (items: T[]) => Promise<R[]>, max: number) {
  let queue: { item: T; resolve: (r: R) => void; reject: (e: unknown) => void }[] = [];
  let draining = false;

  async function drain() {
    while (queue.length) {
      const batch = queue.slice(0, max);
      queue = queue.slice(max);
      try {
        const out = await flush(batch.map((b) => b.item));
        batch.forEach((b, i) => b.resolve(out[i]));
      } catch (err) {
        batch.forEach((b) => b.reject(err));
      }
    }
    draining = false;
  }

  return {
    submit(item: T): Promise<R> {
      return new Promise<R>((resolve, reject) => {
        queue.push({ item, resolve, reject });
        if (draining) return;
        draining = true;
        setTimeout(drain, 0);
      });
    },
  };
}
