/**
 * Handler discovery: every `.ts`/`.js` file under the handlers folder (nested folders too) that
 * default-exports `defineHandler(...)`. Files and folders starting with `_` or `.`, and
 * `*_test.ts`, are helpers, not handlers. A module that fails to load is reported with its path
 * and the others still load.
 *
 * @module
 */
import { z } from "zod";
import { type AnyHandler as Handler, isHandler } from "./define.ts";

export interface LoadError {
  path: string;
  message: string;
}

export interface Registry {
  get(name: string): Handler | undefined;
  list(): Handler[];
  readonly errors: readonly LoadError[];
}

/** A registry of the given handlers (used by discovery, and by tests that build a Pulse). */
export function createRegistry(handlers: readonly Handler[], errors: LoadError[] = []): Registry {
  const byName = new Map<string, Handler>();
  for (const h of handlers) {
    if (byName.has(h.name)) {
      errors.push({ path: h.name, message: `Duplicate handler name "${h.name}": kept the first` });
      continue;
    }
    byName.set(h.name, h);
  }
  return {
    get: (name) => byName.get(name),
    list: () => [...byName.values()].sort((a, b) => a.name.localeCompare(b.name)),
    errors,
  };
}

/** Imports every handler module under `dir`. Never throws for a broken module. */
export async function loadHandlers(dir: string): Promise<Registry> {
  const handlers: Handler[] = [];
  const errors: LoadError[] = [];
  let files: string[];
  try {
    files = await walk(await Deno.realPath(dir));
  } catch (err) {
    return createRegistry([], [{ path: dir, message: `Cannot read handlers folder: ${msg(err)}` }]);
  }
  const seen = new Map<string, string>(); // handler name → the file that defined it first
  for (const path of files.sort()) {
    try {
      const mod = await import(new URL(`file://${path}`).href);
      if (!isHandler(mod.default)) {
        throw new TypeError("Default export is not a defineHandler(...) result");
      }
      const first = seen.get(mod.default.name);
      if (first) {
        throw new TypeError(`Handler name "${mod.default.name}" is already defined by "${first}"`);
      }
      seen.set(mod.default.name, path);
      handlers.push(mod.default);
    } catch (err) {
      errors.push({ path, message: msg(err) });
    }
  }
  return createRegistry(handlers, errors);
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith("_") || e.name.startsWith(".")) continue;
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await walk(path));
    else if (/\.(ts|js|mts|mjs)$/.test(e.name) && !/_test\.[mc]?[tj]s$/.test(e.name)) {
      out.push(path);
    }
  }
  return out;
}

const msg = (err: unknown) => (err instanceof Error ? err.message : String(err)).split("\n")[0];

/** The public description of a handler: name, description, payload JSON Schema. */
export function describeHandler(h: Handler) {
  let payload_schema: unknown;
  try {
    payload_schema = z.toJSONSchema(h.payload, { unrepresentable: "any", io: "input" });
  } catch {
    payload_schema = {};
  }
  return { name: h.name, description: h.description, payload_schema };
}
