/**
 * End to end: `main.ts` as a real process and its exposure. On Deno Deploy (DENO_DEPLOYMENT_ID)
 * it refuses to start without PULSE_API_TOKEN; without a token it binds 127.0.0.1 only and says
 * so; with a token, /api/ routes need `Authorization: Bearer <token>`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type PulseProcess, startHealthy, startPulse, tempDir } from "./_process.ts";

const DEADLINE_MS = 60_000;

/** Env for a process with its own KV file and an empty handlers folder. */
async function isolated(dir: string): Promise<Record<string, string>> {
  const handlers = join(dir, "handlers");
  await Deno.mkdir(handlers, { recursive: true });
  return { PULSE_KV_PATH: join(dir, "pulse.sqlite"), PULSE_HANDLERS_DIR: handlers };
}

/**
 * The local addresses of the TCP sockets listening on `port` (Linux: /proc/net/tcp{,6}), e.g.
 * `["127.0.0.1"]`; `null` where /proc is not there to ask.
 */
async function listeningAddresses(port: number): Promise<string[] | null> {
  if (Deno.build.os !== "linux") return null;
  const found: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(file).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (!local || state !== "0A") continue; // 0A = LISTEN
      const [hex, portHex] = local.split(":");
      if (parseInt(portHex, 16) !== port) continue;
      found.push(hex.length === 8 ? ipv4(hex) : `[${hex}]`);
    }
  }
  return found;
}

/** /proc/net/tcp's little-endian hex IPv4 ("0100007F") as dotted quad ("127.0.0.1"). */
function ipv4(hex: string): string {
  const bytes = hex.match(/../g)!.map((b) => parseInt(b, 16));
  return bytes.reverse().join(".");
}

async function assertListensOnLoopbackOnly(p: PulseProcess) {
  const addresses = await listeningAddresses(p.port);
  if (addresses === null) return; // not Linux: the log line and the request below must do
  assert.deepEqual(addresses, ["127.0.0.1"], `listeners on port ${p.port}`);
}

async function get(p: PulseProcess, path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${p.url}${path}`, { headers });
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

Deno.test("main.ts on Deno Deploy (DENO_DEPLOYMENT_ID) without PULSE_API_TOKEN refuses to start", async () => {
  await using dir = await tempDir("pulse_e2e_auth_deploy_");
  await using p = startPulse({ ...await isolated(dir.path), DENO_DEPLOYMENT_ID: "e2e-test-1" });
  const status = await p.waitExit(DEADLINE_MS);
  assert.notEqual(status.code, 0, `exit code; stdout:\n${p.stdout()}\nstderr:\n${p.stderr()}`);
  assert.match(p.stderr(), /refus\w* to start/i, p.stderr());
  assert.match(p.stderr(), /without PULSE_API_TOKEN/, p.stderr());
  assert.doesNotMatch(p.stdout(), /Pulse listening/, "it served before refusing");
});

Deno.test("main.ts refuses PULSE_HOST=0.0.0.0 without PULSE_API_TOKEN", async () => {
  await using dir = await tempDir("pulse_e2e_auth_wide_");
  await using p = startPulse({ ...await isolated(dir.path), PULSE_HOST: "0.0.0.0" });
  const status = await p.waitExit(DEADLINE_MS);
  assert.notEqual(status.code, 0, `exit code; stdout:\n${p.stdout()}`);
  assert.match(p.stderr(), /Refusing to bind "0\.0\.0\.0" without PULSE_API_TOKEN/, p.stderr());
  assert.doesNotMatch(p.stdout(), /Pulse listening/, "it served before refusing");
});

Deno.test("main.ts without PULSE_API_TOKEN binds 127.0.0.1 only and says so", async () => {
  await using dir = await tempDir("pulse_e2e_auth_open_");
  await using p = await startHealthy(await isolated(dir.path), { timeoutMs: DEADLINE_MS });
  const lines = p.stdout().split("\n");
  assert.ok(
    lines.some((l) => l.startsWith(`Pulse listening on http://127.0.0.1:${p.port} `)),
    `no listening line for 127.0.0.1:${p.port}:\n${p.stdout()}`,
  );
  const warning = lines.find((l) => l.includes("No PULSE_API_TOKEN"));
  assert.ok(warning, `no line about the missing token:\n${p.stdout()}`);
  assert.match(warning, /127\.0\.0\.1/, "the token line does not name the loopback address");
  await assertListensOnLoopbackOnly(p);
  // Open, as it said: no Authorization needed.
  assert.equal((await get(p, "/api/pulse/stats")).status, 200);
  p.kill("SIGTERM");
  assert.equal((await p.waitExit(30_000)).code, 0, p.stderr());
});

Deno.test("main.ts with PULSE_API_TOKEN answers /api/ with 401 unless the bearer matches", async () => {
  await using dir = await tempDir("pulse_e2e_auth_token_");
  const token = `e2e-${crypto.randomUUID()}`;
  await using p = await startHealthy({
    ...await isolated(dir.path),
    PULSE_API_TOKEN: token,
    // Explicit: a token alone would bind every interface; this test listens on loopback only.
    PULSE_HOST: "127.0.0.1",
  }, { timeoutMs: DEADLINE_MS });
  await assertListensOnLoopbackOnly(p);
  assert.doesNotMatch(p.stdout(), /No PULSE_API_TOKEN/);

  for (
    const headers of [
      {} as Record<string, string>,
      { authorization: "Bearer wrong" },
      { authorization: `Bearer ${token}x` },
      { authorization: token },
      { authorization: `Basic ${btoa(`user:${token}`)}` },
    ]
  ) {
    const res = await get(p, "/api/pulse/stats", headers);
    assert.equal(
      res.status,
      401,
      `headers ${JSON.stringify(headers)}: ${JSON.stringify(res.body)}`,
    );
    assert.equal(res.body?.error?.code, "unauthorized", JSON.stringify(res.body));
  }
  const ok = await get(p, "/api/pulse/stats", { authorization: `Bearer ${token}` });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.total, 0);
  // Health stays outside the token (probes have none).
  assert.equal((await get(p, "/healthz")).status, 200);

  p.kill("SIGTERM");
  assert.equal((await p.waitExit(30_000)).code, 0, p.stderr());
  // The token never reaches the logs.
  assert.ok(!p.stdout().includes(token) && !p.stderr().includes(token), "token in the logs");
});
