/**
 * A copy of the ready index (P,"ready",run_at,priority,id) as this store last listed it, kept
 * current by this store's own commits. At low load most ready jobs were enqueued by this very
 * process, so the dispatcher's claim can find them here instead of listing KV first (a list is
 * ~1 ms of a ~4 ms pickup), and its "when is the next job due?" read goes away too.
 *
 * The copy answers only while it is known to be whole:
 * - It covers every ready key up to `upTo` (all of them when null), as the last listing from the
 *   start of the index saw them, plus this store's own commits since (`committed`).
 * - Other writers are seen through the wake counter (P,"signal","wake"), which every commit that
 *   makes a job queued bumps by one. The pool's watch reports it (`observe`); this store knows
 *   which bumps were its own (their versionstamps). A bump that is not ours means a ready key
 *   the copy may lack: it is dropped, and the next claim lists KV again.
 * - Keys other writers delete (a claim or cancel elsewhere) do not bump the counter; the claim
 *   that reads such a job sees it is no longer queued and drops the copy (`drop`). A job has one
 *   ready key at most: when this store queues a job again, any other key the copy still holds
 *   for it (deleted elsewhere meanwhile) goes, so the job is never offered twice, nor by a key
 *   that was due when its new one is not.
 * So a copy that misses something only costs a listing: a commit this store forgets to report
 * bumps the counter as a stranger would, or is found stale by the claim.
 *
 * @module
 */

/** One ready key's parts after the prefix: run_at (epoch ms), priority, id. */
export type ReadyKey = readonly [run_at: number, priority: number, id: string];

/** A change to the ready index made by one commit: the key, added (true) or deleted. */
export type ReadyChange = readonly [key: ReadyKey, added: boolean];

/** Above this many keys the copy is dropped (a backlog lists full batches anyway). */
const MAX_KEYS = 2_000;
/** Bound on own wake bumps remembered between two observations of the counter. */
const MAX_OWN = 10_000;

interface Counter {
  value: bigint;
  stamp: string;
}

/** KV key order of two ready keys (numbers numerically, ids by code unit: ULIDs are ASCII). */
function compareReady(a: ReadyKey, b: ReadyKey): number {
  return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0);
}

export class ReadyCopy {
  /** Sorted; meaningful only while `#whole`. */
  #keys: ReadyKey[] = [];
  /** The key each job id in `#keys` has. */
  #byId = new Map<string, ReadyKey>();
  #whole = false;
  /** The copy holds every ready key ≤ this one; null: every ready key. */
  #upTo: ReadyKey | null = null;
  /** A listing from the start of the index in flight: own changes meanwhile, replayed after. */
  #refresh: { changes: ReadyChange[]; from: Counter; spoilt: boolean } | null = null;

  /** The wake counter as last checked against own bumps, and as last observed. */
  #checked: Counter | null = null;
  #observed: Counter | null = null;
  /** Versionstamps of own commits that bumped the counter after `#checked`. */
  #own: string[] = [];
  /** Own commits that bump the counter, not answered yet. */
  #inFlight = 0;

  /** Records an observation of the wake counter (from a watch). */
  observe(entry: Deno.KvEntryMaybe<Deno.KvU64>) {
    const seen = { value: entry.value?.value ?? 0n, stamp: entry.versionstamp ?? "" };
    if (!this.#observed || seen.stamp > this.#observed.stamp) this.#observed = seen;
  }

  /**
   * Due keys (run_at ≤ now) after `after`, at most `max`, or null when the copy cannot tell
   * (not whole, someone else's bump seen, or it does not reach `now`).
   */
  due(now: number, max: number, after?: ReadyKey): ReadyKey[] | null {
    if (!this.#current() || (this.#upTo && this.#upTo[0] <= now)) return null;
    const out: ReadyKey[] = [];
    let i = after ? this.#search(after, true) : 0;
    for (; i < this.#keys.length && out.length < max && this.#keys[i][0] <= now; i++) {
      out.push(this.#keys[i]);
    }
    return out;
  }

  /** run_at of the earliest ready key, null when there is none, undefined when unknown. */
  earliest(): number | null | undefined {
    if (!this.#current()) return undefined;
    return this.#keys[0]?.[0] ?? this.#upTo?.[0] ?? null;
  }

  /**
   * Starts a listing from the start of the index; returns the token `listed` takes, or null
   * when the counter was never observed (nothing could tell the copy is whole).
   */
  listing(): object | null {
    if (!this.#observed) return null;
    this.#refresh = { changes: [], from: this.#observed, spoilt: false };
    return this.#refresh;
  }

  /**
   * The listing `token` returned `keys` (sorted, from the start of the index); `complete`: it
   * reached the end of the index. Own commits answered meanwhile are replayed on top.
   */
  listed(token: object | null, keys: readonly ReadyKey[], complete: boolean) {
    const r = this.#refresh;
    if (!token || token !== r) return;
    this.#refresh = null;
    if (r.spoilt || keys.length > MAX_KEYS) return this.drop();
    this.#keys = [...keys];
    this.#byId = new Map(keys.map((k) => [k[2], k]));
    this.#upTo = complete ? null : keys.at(-1) ?? null;
    this.#whole = true;
    this.#checked = r.from;
    this.#own = this.#own.filter((s) => s > r.from.stamp);
    for (const change of r.changes) this.#apply(change);
  }

  /** Drops the copy: the next claim lists KV. */
  drop() {
    this.#whole = false;
    this.#keys = [];
    this.#byId.clear();
    if (this.#refresh) this.#refresh.spoilt = true;
  }

  /**
   * Runs an own commit: `wakes` when it bumps the counter; `changes` to the ready index, applied
   * once it is known to have landed. An error (outcome unknown) drops the copy.
   */
  async commit(
    op: Deno.AtomicOperation,
    wakes: boolean,
    changes: readonly ReadyChange[],
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    if (wakes) this.#inFlight++;
    try {
      const res = await op.commit();
      if (res.ok) {
        if (wakes) this.#own.push(res.versionstamp);
        if (this.#own.length > MAX_OWN) this.#own = [];
        for (const change of changes) this.#apply(change);
        this.#refresh?.changes.push(...changes);
      }
      return res;
    } catch (err) {
      this.drop();
      throw err;
    } finally {
      if (wakes) this.#inFlight--;
    }
  }

  /** Whole, and every bump of the counter observed so far was this store's own. */
  #current(): boolean {
    if (!this.#whole || this.#refresh || !this.#checked || !this.#observed) return false;
    const from = this.#checked, to = this.#observed;
    if (to.stamp <= from.stamp) return true;
    const own = this.#own.filter((s) => s > from.stamp && s <= to.stamp).length;
    if (to.value - from.value === BigInt(own)) {
      this.#checked = to;
      this.#own = this.#own.filter((s) => s > to.stamp);
      return true;
    }
    // An own commit still in flight may be among the bumps: undecided, so list this time.
    if (!this.#inFlight) this.drop();
    return false;
  }

  #apply([key, added]: ReadyChange) {
    if (!this.#whole) return;
    const held = this.#byId.get(key[2]);
    // Added: any other key held for the job is stale. Deleted: only that very key goes.
    if (held && (compareReady(held, key) !== 0) === added) {
      this.#keys.splice(this.#search(held, false), 1);
      this.#byId.delete(key[2]);
    }
    if (!added || (this.#upTo && compareReady(key, this.#upTo) > 0)) return;
    if (!this.#byId.has(key[2])) {
      this.#keys.splice(this.#search(key, false), 0, key);
      this.#byId.set(key[2], key);
    }
    if (this.#keys.length > MAX_KEYS) this.drop();
  }

  /** Index of the first key ≥ `key` (> `key` when `strict`). */
  #search(key: ReadyKey, strict: boolean): number {
    let lo = 0, hi = this.#keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = compareReady(this.#keys[mid], key);
      if (c < 0 || (strict && c === 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
