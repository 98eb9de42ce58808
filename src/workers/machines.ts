/**
 * The pool and worker actors (DESIGN "Workers are actors"). The pool moves
 * starting → running → draining → stopped; each worker idle → executing → idle, running one job
 * as an invoked promise. The loops that feed them live in `pool.ts`.
 *
 * @module
 */
import { fromPromise, setup } from "xstate";

export const poolMachine = setup({
  types: {} as { events: { type: "started" } | { type: "stop" } | { type: "stopped" } },
}).createMachine({
  id: "pool",
  initial: "starting",
  states: {
    starting: { on: { started: "running", stop: "draining" } },
    running: { on: { stop: "draining" } },
    draining: { on: { stopped: "stopped" } },
    stopped: { type: "final" },
  },
});

export type WorkerRun = { type: "run"; jobId: string; work: () => Promise<unknown> };

export const workerMachine = setup({
  types: {} as { events: WorkerRun },
  actors: { work: fromPromise<unknown, WorkerRun>(({ input }) => input.work()) },
}).createMachine({
  id: "worker",
  initial: "idle",
  states: {
    idle: { on: { run: { target: "executing" } } },
    executing: {
      invoke: {
        src: "work",
        input: ({ event }) => event as WorkerRun,
        onDone: "idle",
        onError: "idle",
      },
    },
  },
});
