/**
 * `store.data(namespace)`: the `ctx.data` of handlers, under P,"data",namespace, so handlers
 * never touch `Deno.Kv`.
 *
 * @module
 */
import type { DataKey, DataOp, HandlerData } from "../handlers/mod.ts";
import type { Keys } from "./keys.ts";

/** Stays under KV's 1000 mutations and 800 KiB per atomic op, with room to spare. */
const MAX_OPS = 500;
const MAX_BYTES = 600 * 1024;

export function createData(kv: Deno.Kv, keys: Keys) {
  return (namespace: string): HandlerData => {
    const root = keys.data(namespace);
    const full = (key: DataKey): Deno.KvKey => [...root, ...key];
    const commit = async (ops: readonly DataOp[]) => {
      const op = kv.atomic();
      for (const o of ops) {
        if (o.type === "set") op.set(full(o.key), o.value);
        else op.delete(full(o.key));
      }
      const res = await op.commit();
      if (!res.ok) throw new Error("Cannot commit ctx.data writes: a check failed");
    };
    return {
      get: async <T>(key: DataKey) => (await kv.get<T>(full(key))).value,
      set: async (key, value) => void await kv.set(full(key), value),
      delete: (key) => kv.delete(full(key)),
      async *list<T>(prefix: DataKey, options?: { limit?: number }) {
        for await (const e of kv.list<T>({ prefix: full(prefix) }, { limit: options?.limit })) {
          yield { key: e.key.slice(root.length) as DataKey, value: e.value };
        }
      },
      commit,
      async setMany(entries) {
        let batch: DataOp[] = [];
        let bytes = 0;
        for (const { key, value } of entries) {
          const size = JSON.stringify(value ?? null).length + JSON.stringify(key).length + 64;
          if (batch.length && (batch.length >= MAX_OPS || bytes + size > MAX_BYTES)) {
            await commit(batch);
            batch = [];
            bytes = 0;
          }
          batch.push({ type: "set", key, value });
          bytes += size;
        }
        if (batch.length) await commit(batch);
      },
    };
  };
}
