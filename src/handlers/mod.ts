/**
 * Handlers: the `defineHandler` contract and discovery of handler modules.
 *
 * @module
 */
export { defineHandler, isHandler } from "./define.ts";
export type {
  AnyHandler,
  Handler,
  HandlerContext,
  HandlerData,
  HandlerLog,
  SpawnRequest,
} from "./define.ts";
export { createRegistry, describeHandler, loadHandlers } from "./registry.ts";
export type { LoadError, Registry } from "./registry.ts";
