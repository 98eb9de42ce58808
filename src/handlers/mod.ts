/**
 * Handlers: the `defineHandler` contract and discovery of handler modules.
 *
 * @module
 */
export { defineHandler, isHandler } from "./define.ts";
export type {
  AnyHandler,
  DataKey,
  DataOp,
  Handler,
  HandlerContext,
  HandlerData,
  HandlerDefinition,
  HandlerLog,
  SpawnRequest,
} from "./define.ts";
export { createRegistry, describeHandler, loadHandlers } from "./registry.ts";
export type { LoadError, Registry } from "./registry.ts";
