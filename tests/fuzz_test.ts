/**
 * Fuzzing the control API with fast-check (DESIGN invariant 9: bad input gets a clear 4xx and
 * changes nothing). The pool is stopped, so nothing in KV moves by itself; fixture jobs sit in
 * every status. Thousands of random requests go to every route: random methods, JSON and
 * non-JSON bodies, lone surrogates, invalid UTF-8, huge and negative numbers, deep nesting,
 * garbage query strings and ids with `/`, `..`, `%2F` and unicode. For every answer:
 * - never a 5xx (`GET /healthz` answers 503 by contract while the pool is not running);
 * - a 4xx carries `{ error: { code, message } }` with a documented code that fits its status,
 *   and a dump of every KV entry (key, value, versionstamp) is the same as before the request;
 * - a 2xx to GET/HEAD changes nothing either; any other 2xx (a valid request that writes) takes
 *   a new baseline, after putting the fixture jobs back in their statuses.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { iso } from "../src/clock.ts";
import { defineHandler, z } from "../src/mod.ts";
import type { JobEvent } from "../src/lifecycle/mod.ts";
import type { Job } from "../src/types.ts";
import { setup, type World } from "./_setup.ts";

const echo = defineHandler({
  name: "test.echo",
  description: "Echoes",
  payload: z.object({ text: z.string(), n: z.number().optional() }),
  run: (ctx) => ({ echoed: ctx.payload.text }),
});

const API = "/api/pulse";
/** A well-formed ULID that no job has. */
const NO_SUCH_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

/** The HTTP contract's error codes and the statuses each may come with. */
const STATUS_OF: Record<string, number[]> = {
  validation_error: [400, 415],
  unauthorized: [401],
  not_found: [404],
  invalid_transition: [409],
  conflict: [409],
  payload_too_large: [413],
  unknown_handler: [422],
  unknown_parent: [422],
};

// ---------------------------------------------------------------------------------------------
// The world: fixture jobs in every status, put back in those statuses after a request moved them.

const SLOTS = [
  "queued",
  "child",
  "running",
  "paused",
  "completed",
  "failed",
  "cancelled",
] as const;
type Slot = (typeof SLOTS)[number];

/** Text that stands for a fixture job's id until the request is built (`$slot:queued`). */
const token = (slot: Slot) => `$slot:${slot}`;

const INSPECT: Deno.InspectOptions = {
  depth: Infinity,
  iterableLimit: Infinity,
  strAbbreviateSize: Infinity,
  sorted: true,
  compact: true,
  breakLength: Infinity,
};

/**
 * Every KV entry as one line: key, value and versionstamp. A value never changes under one
 * versionstamp, so the text of an entry already seen in the last dump (`cache`) is reused:
 * inspecting every value on every request would dominate the run time.
 */
async function dump(kv: Deno.Kv, cache: Map<string, string>, after: string): Promise<string[]> {
  const lines: string[] = [];
  const seen = new Map<string, string>();
  try {
    for await (const e of kv.list({ prefix: [] }, { batchSize: 1000 })) {
      const id = `${e.versionstamp} ${JSON.stringify(e.key)}`;
      const line = cache.get(id) ?? Deno.inspect([e.key, e.value, e.versionstamp], INSPECT);
      seen.set(id, line);
      lines.push(line);
    }
  } catch (err) {
    throw new Error(`KV holds an entry that cannot be read back, after ${after}: ${err}`);
  }
  cache.clear();
  for (const [id, line] of seen) cache.set(id, line);
  return lines;
}

/** Past this many KV entries (jobs that valid requests created), the world starts afresh. */
const RECYCLE_AT = 150;

class Fuzz implements AsyncDisposable {
  t!: World;
  readonly slots = new Map<Slot, string>();
  baseline: string[] = [];
  readonly lines = new Map<string, string>();
  /** Answers seen, by status. */
  readonly seen = new Map<number, number>();

  static async open(): Promise<Fuzz> {
    const f = new Fuzz();
    await f.renew();
    return f;
  }

  async renew() {
    await this.t?.[Symbol.asyncDispose]();
    this.t = await setup([echo], { start: false });
    this.slots.clear();
    this.lines.clear();
    await this.refill("setup");
  }

  [Symbol.asyncDispose]() {
    return this.t[Symbol.asyncDispose]();
  }

  /** Puts a fresh job in every slot whose job is gone or moved, then takes a new baseline. */
  async refill(after: string) {
    const store = this.t.pulse.store;
    for (const slot of SLOTS) {
      const id = this.slots.get(slot);
      const job = id ? await store.jobs.get(id) : null;
      if (!job || job.status !== (slot === "child" ? "queued" : slot)) {
        this.slots.set(slot, await this.make(slot));
      }
    }
    this.baseline = await dump(this.t.kv, this.lines, after);
    if (this.baseline.length > RECYCLE_AT) await this.renew();
  }

  async make(slot: Slot): Promise<string> {
    const store = this.t.pulse.store;
    const [r] = await store.jobs.insert([{
      handler_name: "test.echo",
      payload: { text: "fixture" },
      source: "",
      queue: "default",
      cost_estimate: 0,
      total: 0,
      priority: 0,
      parent_job_id: slot === "child" ? this.slots.get("queued") : undefined,
    }]);
    assert.ok(r.ok && r.created, JSON.stringify(r));
    const id = r.job.id;
    const now = this.t.clock.now();
    const lease = { owner: "fuzz", attempt: 1 };
    const step = async (event: JobEvent, withLease = false) => {
      const [o] = await store.transitions.apply([{
        id,
        event: () => event,
        ...(withLease ? { lease } : {}),
      }]);
      assert.ok(o.ok, JSON.stringify(o));
    };
    if (slot === "running" || slot === "completed" || slot === "failed") {
      await step({ type: "claim", now, lease: { owner: "fuzz", expires_at: iso(now + 864e5) } });
    }
    if (slot === "completed") await step({ type: "complete", now, result: { ok: 1 } }, true);
    if (slot === "failed") {
      await step({
        type: "fail",
        now,
        backoff_ms: 0,
        error_context: {
          stage: "run",
          code: "validation_error",
          message: "fixture",
          retryable: false,
          recoverable: false,
        },
      }, true);
    }
    if (slot === "paused") await step({ type: "pause", now, pause_reason: "user_requested" });
    if (slot === "cancelled") await step({ type: "cancel", now });
    return id;
  }

  /** Replaces every `$slot:<name>` token with that fixture job's id. */
  resolve(text: string): string {
    return text.replace(/\$slot:([a-z]+)/g, (m, s) => this.slots.get(s as Slot) ?? m);
  }

  /** Sends one request and checks the answer and KV; false when it was not sendable. */
  async check(req: Req): Promise<boolean> {
    const path = this.resolve(req.path);
    const query = req.query.length ? `?${this.resolve(req.query)}` : "";
    const headers = new Headers();
    if (req.contentType !== null) headers.set("content-type", req.contentType);
    let body: BodyInit | undefined;
    if (req.body.kind === "text") body = this.resolve(req.body.text);
    if (req.body.kind === "bytes") body = req.body.bytes;
    let request: Request;
    try {
      request = new Request(`http://pulse.test${path}${query}`, {
        method: req.method,
        headers,
        body: ["GET", "HEAD"].includes(req.method) ? undefined : body,
      });
    } catch {
      return false; // not expressible as an HTTP request (e.g. a method that is not a token)
    }
    const label = `${req.method} ${request.url.slice(0, 300)} (body ${describe(req.body)})`;
    const res = await this.t.pulse.app.request(request);
    const text = await res.text();
    this.seen.set(res.status, (this.seen.get(res.status) ?? 0) + 1);
    const healthz = new URL(request.url).pathname === "/healthz";
    const what = `${label} answered ${res.status}: ${text.slice(0, 500)}`;
    assert.ok(res.status < 500 || (healthz && res.status === 503), what);
    assert.ok(res.status < 300 || res.status >= 400, what);
    const refused = res.status >= 400 && res.status < 500;
    if (refused && req.method !== "HEAD") assertErrorShape(res.status, text, what);
    if (refused || req.method === "GET" || req.method === "HEAD") {
      const after = await dump(this.t.kv, this.lines, label);
      assert.deepEqual(after, this.baseline, `KV changed: ${what}`);
    } else {
      await this.refill(label); // a valid request that writes: the new state is the baseline
    }
    return true;
  }
}

function assertErrorShape(status: number, text: string, what: string) {
  let body: { error?: { code?: unknown; message?: unknown; issues?: unknown } };
  try {
    body = JSON.parse(text);
  } catch {
    assert.fail(`not JSON: ${what}`);
  }
  const error = body?.error;
  assert.equal(typeof error?.code, "string", what);
  assert.equal(typeof error?.message, "string", what);
  assert.ok((error!.message as string).length > 0, what);
  assert.ok(STATUS_OF[error!.code as string]?.includes(status), `code/status mismatch: ${what}`);
  if (error!.issues !== undefined) {
    assert.ok(Array.isArray(error!.issues), what);
    for (const i of error!.issues as { path: unknown; message: unknown }[]) {
      assert.equal(typeof i.path, "string", what);
      assert.equal(typeof i.message, "string", what);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Requests.

type Body =
  | { kind: "none" }
  | { kind: "text"; text: string }
  | { kind: "bytes"; bytes: Uint8Array<ArrayBuffer> };
interface Req {
  method: string;
  path: string;
  query: string;
  body: Body;
  /** null: no content-type header. */
  contentType: string | null;
}

const describe = (b: Body) =>
  b.kind === "none"
    ? "none"
    : b.kind === "text"
    ? `${b.text.length} chars: ${JSON.stringify(b.text.slice(0, 200))}`
    : `${b.bytes.length} bytes: ${[...b.bytes.slice(0, 60)]}`;

const utf8 = (s: string) => new TextEncoder().encode(s);
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
};

/** JSON text of anything, falling back to String() for what JSON cannot hold. */
function serialise(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x) => typeof x === "bigint" ? `${x}n` : x) ?? String(v);
  } catch {
    try {
      return String(v);
    } catch {
      return "[object]";
    }
  }
}

/** encodeURIComponent, or the raw text where it cannot encode (lone surrogates). */
const enc = (s: string) => {
  try {
    return encodeURIComponent(s);
  } catch {
    return s;
  }
};

const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const method = fc.oneof(
  { arbitrary: fc.constantFrom(...METHODS), weight: 12 },
  { arbitrary: fc.constantFrom("GET", "POST"), weight: 6 },
  { arbitrary: fc.stringMatching(/^[A-Za-z]{1,8}$/), weight: 1 },
);

/** Every route of the API with its own method; `{id}` takes a job id. */
const ROUTES: [string, string][] = [
  ["GET", "/jobs"],
  ["POST", "/jobs"],
  ["POST", "/jobs/batch"],
  ["GET", "/jobs/{id}"],
  ["DELETE", "/jobs/{id}"],
  ["GET", "/jobs/{id}/children"],
  ["GET", "/jobs/{id}/events"],
  ["POST", "/jobs/{id}/pause"],
  ["POST", "/jobs/{id}/resume"],
  ["POST", "/jobs/{id}/cancel"],
  ["POST", "/jobs/{id}/retry"],
  ["GET", "/stats"],
  ["GET", "/metrics"],
  ["GET", "/handlers"],
  ["GET", "/budget"],
  ["PUT", "/budget"],
  ["POST", "/pause"],
  ["POST", "/resume"],
  ["GET", "/openapi.json"],
  ["GET", "/healthz"],
];
const pathOf = (p: string) => p === "/healthz" ? p : `${API}${p}`;

const slotId = fc.constantFrom(...SLOTS).map(token);
/** Ids: fixture jobs, a free ULID, and garbage with `/`, `..`, `%2F`, unicode and worse. */
const badId = fc.oneof(
  fc.constantFrom(
    "",
    ".",
    "..",
    "../..",
    "%2F",
    "%2f..%2F",
    "a/b",
    "/",
    "%",
    "%ZZ",
    "%00",
    "%ED%A0%80",
    "%FF",
    "Ω",
    "😀",
    "\u0000",
    "\ud800",
    "01ARZ3NDEKTSV4RRFFQ69G5FA", // 25 chars
    "01ARZ3NDEKTSV4RRFFQ69G5FAVX", // 27 chars
    "01ARZ3NDEKTSV4RRFFQ69G5FAU", // U is not Crockford
    "01arz3ndektsv4rrffq69g5fav", // lower case
    "01ARZ3NDEKTSV4RRFFQ69G5F%41",
    " 01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "x".repeat(3000),
  ),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 30 }),
);
const anyId = fc.oneof(
  { arbitrary: slotId, weight: 5 },
  { arbitrary: fc.constant(NO_SUCH_ID), weight: 1 },
  { arbitrary: badId, weight: 4 },
);
/** An id placed in a path: percent-encoded, or raw so that `/` and `..` take effect. */
const idInPath = fc.tuple(anyId, fc.boolean()).map(([id, raw]) =>
  raw || id.startsWith("$slot:") ? id : enc(id)
);

const STATUSES = ["queued", "running", "paused", "completed", "failed", "cancelled"];
const queryValue = fc.oneof(
  fc.constantFrom(
    "0",
    "-1",
    "1",
    "1e9",
    "1e999",
    "-0",
    "abc",
    "",
    "1.5",
    "50",
    "1000",
    "1001",
    " 1",
    "0x10",
    "NaN",
    "Infinity",
    "9007199254740993",
    NO_SUCH_ID,
    "%",
    "%ZZ",
    "%ED%A0%80",
    "%FF",
    "a&b=c",
    "#",
  ),
  fc.constantFrom(...STATUSES, "QUEUED", "done", "unknown"),
  slotId,
  fc.string({ unit: "binary", maxLength: 30 }),
);
const queryKey = fc.oneof(
  { arbitrary: fc.constantFrom("limit", "cursor", "status", "handler_name", "queue"), weight: 6 },
  { arbitrary: fc.constantFrom("parent_job_id", "limit[]", "LIMIT", ""), weight: 1 },
  { arbitrary: fc.string({ unit: "binary", maxLength: 8 }), weight: 1 },
);
const query = fc.array(fc.tuple(queryKey, queryValue, fc.boolean()), { maxLength: 4 }).map((qs) =>
  qs.map(([k, v, raw]) => raw ? `${k}=${v}` : `${enc(k)}=${enc(v)}`).join("&")
);

const weirdNumber = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.constantFrom(-1, -0, 0, 1, 1e9, 1e9 + 1, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, 0.5, -1e-9),
);
/** Raw number literals JSON.stringify cannot write: overflowing, underflowing, over-precise. */
const rawNumber = fc.constantFrom(
  "1e400",
  "-1e400",
  "1e-400",
  "-0",
  "123456789012345678901234567890",
  "0.00000000000000000000000000001",
  "1E2",
  "-1",
  "1.0",
  "9007199254740993",
);
const isoDate = fc.date({
  min: new Date(Date.UTC(1960, 0, 1)),
  max: new Date(Date.UTC(2200, 0, 1)),
  noInvalidDate: true,
}).map((d) => d.toISOString());
const runAt = fc.oneof(
  isoDate,
  fc.constantFrom(
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00+99:00",
    "2026-02-30T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "+275760-09-13T00:00:00.000Z",
    "2026-01-01",
  ),
  fc.string({ maxLength: 30 }),
);
const weirdString = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.constantFrom("", "\ud800", "\udfff", "a\ud800b", "\u0000", "x".repeat(501), "Ω😀"),
);

/** Mostly a valid value, sometimes a wrong one: whole requests are then often valid. */
const mostly = <T, U>(valid: fc.Arbitrary<T>, wrong: fc.Arbitrary<U>) =>
  fc.oneof({ arbitrary: valid, weight: 8 }, { arbitrary: wrong, weight: 1 });
/** Adds, now and then, a field no schema knows (strict objects refuse it). */
const withSurprise = <T extends object>(a: fc.Arbitrary<T>) =>
  fc.tuple(a, fc.oneof({ arbitrary: fc.constant(undefined), weight: 8 }, fc.jsonValue()))
    .map(([o, extra]) => extra === undefined ? o : { ...o, surprise: extra });

/** Objects shaped like an enqueue request, each field valid or not. */
const enqueueLike = withSurprise(fc.record({
  handler_name: mostly(
    fc.constant("test.echo"),
    fc.oneof(fc.constantFrom("TEST.ECHO", "test.echo ", "nope", "x".repeat(201)), weirdString),
  ),
  payload: mostly(
    fc.record({
      text: fc.string({ maxLength: 40 }),
      n: fc.double({ noNaN: true, noDefaultInfinity: true }),
    }, { requiredKeys: ["text"] }),
    fc.oneof(fc.record({ text: weirdString, n: weirdNumber }), fc.jsonValue({ maxDepth: 3 })),
  ),
  source: mostly(fc.string({ maxLength: 40 }), weirdString),
  queue: mostly(fc.stringMatching(/^[A-Za-z0-9_.:-]{1,12}$/), weirdString),
  cost_estimate: mostly(fc.double({ min: 0, max: 1e9, noNaN: true }), weirdNumber),
  parent_job_id: mostly(slotId, fc.oneof(badId, fc.constant(NO_SUCH_ID))),
  total: mostly(fc.nat(), weirdNumber),
  priority: mostly(fc.integer({ min: -1000, max: 1000 }), weirdNumber),
  run_at: mostly(isoDate, runAt),
}, { requiredKeys: [] }));

const calls = fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.constant(null));
const usd = fc.oneof(fc.double({ min: 0, max: 1e9, noNaN: true }), fc.constant(null));
/** Objects shaped like a limits patch (`PUT /budget`), each field valid or not. */
const limitsLike = withSurprise(fc.record({
  max_calls_per_minute: mostly(calls, fc.oneof(weirdNumber, fc.constant("5"))),
  daily_budget_usd: mostly(usd, weirdNumber),
  monthly_budget_usd: mostly(usd, weirdNumber),
  pause_on_budget: mostly(fc.boolean(), fc.jsonValue({ maxDepth: 1 })),
  time_zone: mostly(
    fc.constantFrom("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "utc"),
    fc.oneof(fc.constantFrom("Mars/Olympus", "", "Etc/GMT+14", "\ud800"), weirdString),
  ),
  handler_limits: mostly(
    fc.dictionary(
      fc.string({ minLength: 1, maxLength: 20 }),
      fc.record({ max_calls_per_minute: calls }),
      { maxKeys: 3 },
    ),
    fc.oneof(
      fc.dictionary(weirdString, fc.record({ max_calls_per_minute: weirdNumber }), { maxKeys: 3 }),
      fc.jsonValue({ maxDepth: 2 }),
    ),
  ),
}, { requiredKeys: [] }));

/** JSON text that nests `depth` deep: in the payload, at the top, or as the whole body. */
const deepBody = fc.record({
  depth: fc.oneof(
    fc.integer({ min: 1, max: 200 }),
    fc.integer({ min: 200, max: 6000 }),
    fc.integer({ min: 6000, max: 200_000 }),
  ),
  open: fc.constantFrom("[", '{"a":'),
  where: fc.constantFrom("payload", "top", "whole", "budget"),
}).map(({ depth, open, where }) => {
  const nest = open.repeat(depth) + "1" + (open === "[" ? "]" : "}").repeat(depth);
  if (where === "whole") return nest;
  if (where === "budget") return `{"handler_limits":{"test.echo":${nest}}}`;
  if (where === "top") return `{"handler_name":"test.echo","payload":{"text":"x"},"d":${nest}}`;
  return `{"handler_name":"test.echo","payload":{"text":"x","d":${nest}}}`;
});

/** Enqueue-shaped text with raw number literals in every numeric field. */
const rawNumbersBody = fc.record({
  cost: rawNumber,
  total: rawNumber,
  priority: rawNumber,
  n: rawNumber,
}).map((r) =>
  `{"handler_name":"test.echo","payload":{"text":"x","n":${r.n}},"cost_estimate":${r.cost},` +
  `"total":${r.total},"priority":${r.priority}}`
);

const BAD_UTF8 = [
  [0xff],
  [0xfe],
  [0x80],
  [0xc3], // truncated 2-byte sequence
  [0xc0, 0xaf], // overlong "/"
  [0xe0, 0x80, 0xaf], // overlong
  [0xed, 0xa0, 0x80], // an encoded lone surrogate
  [0xf4, 0x90, 0x80, 0x80], // over U+10FFFF
  [0xf8, 0x88, 0x80, 0x80, 0x80], // 5-byte form
];
const TEMPLATES = [
  ['{"handler_name":"', '","payload":{"text":"x"}}'],
  ['{"handler_name":"test.echo","payload":{"text":"', '"}}'],
  ['{"handler_name":"test.echo","source":"', '","payload":{"text":"x"}}'],
  ['{"daily_budget_usd":1', "}"],
  ["", ""],
  ['{"', '":1}'],
];
/** Invalid UTF-8 inside otherwise sound JSON text, or random bytes. */
const badBytes = fc.oneof(
  fc.tuple(
    fc.constantFrom(...TEMPLATES),
    fc.array(fc.constantFrom(...BAD_UTF8), { minLength: 1, maxLength: 3 }),
    fc.boolean(),
  ).map(([[pre, post], bad, bom]) =>
    concat(
      new Uint8Array(bom ? [0xef, 0xbb, 0xbf] : []),
      utf8(pre),
      new Uint8Array(bad.flat()),
      utf8(post),
    )
  ),
  fc.uint8Array({ maxLength: 64 }),
);

const anythingText = fc.anything({
  maxDepth: 3,
  withBigInt: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withTypedArray: true,
  withSparseArray: true,
  withNullPrototype: true,
  withBoxedValues: true,
}).map(serialise);

const text = (a: fc.Arbitrary<string>): fc.Arbitrary<Body> =>
  a.map((t) => ({ kind: "text" as const, text: t }));
const body: fc.Arbitrary<Body> = fc.oneof(
  { arbitrary: fc.constant({ kind: "none" as const }), weight: 3 },
  { arbitrary: text(fc.json({ maxDepth: 4 })), weight: 3 },
  { arbitrary: text(anythingText), weight: 3 },
  { arbitrary: text(fc.string({ unit: "binary", maxLength: 200 })), weight: 2 },
  { arbitrary: text(enqueueLike.map(serialise)), weight: 4 },
  { arbitrary: text(limitsLike.map(serialise)), weight: 2 },
  {
    arbitrary: text(fc.array(enqueueLike, { maxLength: 4 }).map((jobs) => serialise({ jobs }))),
    weight: 2,
  },
  { arbitrary: text(deepBody), weight: 2 },
  { arbitrary: text(rawNumbersBody), weight: 1 },
  { arbitrary: badBytes.map((bytes) => ({ kind: "bytes" as const, bytes })), weight: 2 },
  {
    arbitrary: fc.constantFrom(1024 * 1024 - 20, 1024 * 1024 + 1, 2 * 1024 * 1024).map((n) => ({
      kind: "text" as const,
      text: `{"handler_name":"test.echo","payload":{"text":"${"x".repeat(n)}"}}`,
    })),
    weight: 1,
  },
);
const contentType = fc.oneof(
  { arbitrary: fc.constant("application/json"), weight: 10 },
  {
    arbitrary: fc.constantFrom(
      null,
      "text/plain",
      "application/json; charset=utf-8",
      "application/json; charset=utf-16",
      "APPLICATION/JSON",
      "application/vnd.api+json",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=xyz",
      "",
    ),
    weight: 3,
  },
  { arbitrary: fc.stringMatching(/^[ -~]{0,30}$/), weight: 1 },
);

/** A route of the API, mostly with its own method, sometimes with any other. */
const route = fc.tuple(
  fc.constantFrom(...ROUTES),
  idInPath,
  fc.oneof({ arbitrary: fc.constant(null), weight: 3 }, method),
).map(([[own, p], id, other]) => ({ method: other ?? own, path: pathOf(p.replace("{id}", id)) }));
const randomPath = fc.oneof(
  fc.webPath(),
  fc.string({ unit: "binary", maxLength: 30 }).map((s) => `${API}/${enc(s)}`),
  fc.tuple(fc.constantFrom(...ROUTES), fc.constantFrom("/", "//", "/x", "%2F", ".json", "?"))
    .map(([[, p], tail]) => `${pathOf(p.replace("{id}", NO_SUCH_ID))}${tail}`),
  fc.constantFrom("/api", "/api/", "/api/pulse", "/api/pulse/", "/", "/API/PULSE/STATS"),
);

const request = (to: fc.Arbitrary<{ method: string; path: string }>) =>
  fc.record({ to, query, body, contentType }).map(({ to, ...rest }) => ({ ...to, ...rest }));

/** Runs `numRuns` random requests against one world; returns the world's tally. */
async function fuzz(arb: fc.Arbitrary<Req>, numRuns: number) {
  await using f = await Fuzz.open();
  let sent = 0;
  await fc.assert(
    fc.asyncProperty(arb, async (req) => {
      if (await f.check(req)) sent++;
    }),
    { numRuns, endOnFailure: true },
  );
  assert.ok(sent >= numRuns * 0.95, `only ${sent} of ${numRuns} requests could be sent`);
  return { sent, seen: f.seen };
}

const has = (seen: Map<number, number>, ...statuses: number[]) => {
  for (const s of statuses) {
    assert.ok(seen.get(s), `no ${s} answer in ${JSON.stringify([...seen])}`);
  }
};

Deno.test("random requests to every route never answer 5xx, and a 4xx changes nothing in KV", async () => {
  const { seen } = await fuzz(request(route), 1500);
  has(seen, 200, 400, 404, 409, 413, 415);
});

Deno.test("random paths and job ids (with /, .., %2F, unicode) never answer 5xx", async () => {
  const { seen } = await fuzz(
    request(fc.oneof(route, fc.record({ method, path: randomPath }))),
    800,
  );
  has(seen, 200, 400, 404);
});

Deno.test("random query strings on the list routes answer 200 or a 400 that changes nothing", async () => {
  const lists = fc.oneof(
    fc.constant(`${API}/jobs`),
    slotId.map((id) => `${API}/jobs/${id}/children`),
    fc.constant(`${API}/jobs/${NO_SUCH_ID}/children`),
  );
  const arb = fc.record({
    method: fc.constant("GET"),
    path: lists,
    query,
    body: fc.constant<Body>({ kind: "none" }),
    contentType: fc.constant(null),
  });
  const { seen } = await fuzz(arb, 700);
  has(seen, 200, 400);
});

Deno.test("near-valid enqueue, batch and limits bodies answer 2xx or a 4xx that changes nothing", async () => {
  const call = (method: string, path: string, body: fc.Arbitrary<Body>) =>
    fc.record({
      method: fc.constant(method),
      path: fc.constant(`${API}${path}`),
      query: fc.constant(""),
      body,
      contentType: fc.constant("application/json"),
    });
  const batch = fc.array(enqueueLike, { minLength: 1, maxLength: 5 }).map((jobs) => ({ jobs }));
  const arb = fc.oneof(
    { arbitrary: call("POST", "/jobs", text(enqueueLike.map(serialise))), weight: 4 },
    { arbitrary: call("POST", "/jobs/batch", text(batch.map(serialise))), weight: 2 },
    {
      arbitrary: call(
        "POST",
        "/jobs",
        fc.oneof(
          text(deepBody),
          text(rawNumbersBody),
          badBytes.map((bytes) => ({ kind: "bytes" as const, bytes })),
        ),
      ),
      weight: 2,
    },
    { arbitrary: call("PUT", "/budget", text(limitsLike.map(serialise))), weight: 2 },
    { arbitrary: call("PUT", "/budget", text(deepBody)), weight: 1 },
  );
  const { seen } = await fuzz(arb, 900);
  has(seen, 200, 201, 400, 422);
});

Deno.test("an enqueued job with any accepted payload can be read back, listed and claimed", async () => {
  // What a 201 accepted must stay readable: a record KV cannot deserialise would poison the list
  // route and the dispatcher's claim for every job, not only this one.
  await using t = await setup([echo], { start: false });
  const deep = (n: number) => '{"a":'.repeat(n) + "1" + "}".repeat(n);
  for (const depth of [10, 100, 1000, 2000, 3000, 5000]) {
    const res = await t.pulse.app.request(`${API}/jobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: `{"handler_name":"test.echo","payload":{"text":"x","d":${deep(depth)}}}`,
    });
    const answer = await res.text();
    assert.ok([201, 400, 413].includes(res.status), `depth ${depth}: ${res.status} ${answer}`);
    if (res.status !== 201) continue;
    const id = JSON.parse(answer).id;
    assert.equal((await t.call("GET", `${API}/jobs/${id}`)).status, 200, `depth ${depth}`);
    assert.equal((await t.call("GET", `${API}/jobs?limit=1000`)).status, 200, `depth ${depth}`);
    const claimed = await t.pulse.store.claims.next({ owner: "t", max: 50, lease_ms: 1000 });
    assert.deepEqual(claimed.map((j: Job) => j.id), [id], `depth ${depth}`);
  }
});

Deno.test("sources that differ only in lone surrogates are not deduplicated as one", async () => {
  // KV writes a lone surrogate in a key as U+FFFD, so "\ud800" and "\ud801" would share the
  // dedup key P,"active",handler,source: such a source must be refused or kept apart.
  await using t = await setup([echo], { start: false });
  const post = (source: string) =>
    t.call("POST", `${API}/jobs`, { handler_name: "test.echo", payload: { text: "x" }, source });
  const a = await post("\ud800");
  const b = await post("\ud801");
  for (const r of [a, b]) assert.ok([201, 400].includes(r.status), JSON.stringify(r.body));
  if (a.status === 201 && b.status === 201) assert.notEqual(a.body.id, b.body.id);
  const c = await post("\ufffd");
  assert.equal(c.status, 201, JSON.stringify(c.body));
  if (a.status === 201) assert.notEqual(c.body.id, a.body.id);
});
