/**
 * The public module for handler files: `defineHandler`, `PermanentError` and zod's `z`.
 * A handler file imports only this module.
 *
 * @module
 */
export { z } from "zod";
export { defineHandler } from "./handlers/mod.ts";
export type {
  DataKey,
  DataOp,
  HandlerContext,
  HandlerData,
  HandlerDefinition,
  SpawnRequest,
} from "./handlers/mod.ts";
export { PermanentError } from "./errors.ts";
