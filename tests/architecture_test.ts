/**
 * Architecture checks (DESIGN "Layers"): a lower layer never imports a higher one, a folder is
 * entered through its mod.ts, and nothing mutable lives at module level in src/.
 */
import assert from "node:assert/strict";

const SRC = new URL("../src/", import.meta.url);

/** Layer of a file by its path under src/ (DESIGN: L0 leaf … L5 root). */
function layerOf(path: string): number {
  if (/^(types|errors|clock|config)\.ts$/.test(path)) return 0;
  if (/^(lifecycle|pulse)\//.test(path)) return 1;
  if (/^(store|handlers)\//.test(path) || path === "mod.ts") return 2;
  if (path.startsWith("workers/")) return 3;
  if (path.startsWith("api/")) return 4;
  if (path === "pulse.ts") return 5;
  throw new Error(`No layer for src/${path}: add it to tests/architecture_test.ts`);
}

async function sources(dir = SRC, base = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) out.push(...await sources(new URL(`${e.name}/`, dir), `${base}${e.name}/`));
    else if (e.name.endsWith(".ts")) out.push(`${base}${e.name}`);
  }
  return out.sort();
}

function relativeImports(text: string): string[] {
  // Statements start at column 0; examples inside JSDoc (" * import …") do not count.
  const statements = /^(?:import|export)[^;]*?from\s+["'](\.[^"']+)["']/gm;
  return [...text.matchAll(statements)].map((m) => m[1]);
}

function resolve(from: string, spec: string): string {
  return new URL(spec, new URL(from, SRC)).pathname.slice(SRC.pathname.length);
}

Deno.test("src/ layers import only the same or lower layers", async () => {
  const violations: string[] = [];
  let edges = 0;
  for (const file of await sources()) {
    const text = await Deno.readTextFile(new URL(file, SRC));
    for (const spec of relativeImports(text)) {
      const target = resolve(file, spec);
      edges++;
      if (layerOf(target) > layerOf(file)) {
        violations.push(`${file} (L${layerOf(file)}) imports ${target} (L${layerOf(target)})`);
      }
    }
  }
  assert.ok(edges > 30, `only ${edges} imports found: the scanner is broken`);
  assert.deepEqual(violations, []);
});

Deno.test("src/ folders are entered through their mod.ts", async () => {
  const violations: string[] = [];
  for (const file of await sources()) {
    const text = await Deno.readTextFile(new URL(file, SRC));
    for (const spec of relativeImports(text)) {
      const target = resolve(file, spec);
      const folder = target.includes("/") ? target.slice(0, target.lastIndexOf("/") + 1) : "";
      if (folder && !file.startsWith(folder) && !target.endsWith("/mod.ts")) {
        violations.push(`${file} imports ${target} instead of ${folder}mod.ts`);
      }
    }
  }
  assert.deepEqual(violations, []);
});

Deno.test("src/ has no mutable module-level state", async () => {
  const violations: string[] = [];
  for (const file of await sources()) {
    const lines = (await Deno.readTextFile(new URL(file, SRC))).split("\n");
    lines.forEach((line, i) => {
      if (/^(export\s+)?(let|var)\s/.test(line)) {
        violations.push(`${file}:${i + 1}: ${line.trim()}`);
      }
    });
  }
  assert.deepEqual(violations, []);
});
