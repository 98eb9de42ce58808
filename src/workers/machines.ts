/**
 * The pool and worker actors (DESIGN "Workers are actors"). The pool moves
 * starting → running → draining → stopped; each worker idle → executing → idle, running one job
 * at a time. The loops that feed them live in `dispatch.ts` and its neighbours.
 *
 * @module
 */
import { setup, transition } from "xstate";

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

export type WorkerEvent = { type: "run"; jobId: string } | { type: "done" };
export type WorkerState = "idle" | "executing";

export const workerMachine = setup({
  types: {} as { events: WorkerEvent },
}).createMachine({
  id: "worker",
  initial: "idle",
  states: {
    idle: { on: { run: "executing" } },
    executing: { on: { done: "idle" } },
  },
});

/**
 * The worker machine's answer for each (state, event), asked once through the pure
 * `transition()` when this module loads, as the job lifecycle's table is (lifecycle/next.ts):
 * a worker changes state twice per job, and an interpreted actor costs ~20 µs per event.
 */
const WORKER_TABLE: ReadonlyMap<string, WorkerState> = (() => {
  const table = new Map<string, WorkerState>();
  const samples: WorkerEvent[] = [{ type: "run", jobId: "" }, { type: "done" }];
  for (const state of ["idle", "executing"] as const) {
    for (const event of samples) {
      const snapshot = workerMachine.resolveState({ value: state, context: {} });
      const [after] = transition(workerMachine, snapshot, event);
      if (after !== snapshot) table.set(`${state}|${event.type}`, after.value as WorkerState);
    }
  }
  return table;
})();

/** One worker actor: its state changes only as the worker machine allows. */
export function createWorker() {
  let state: WorkerState = "idle";
  let jobId: string | null = null;
  return {
    get state() {
      return state;
    },
    /** The job it runs, or null when idle. */
    get jobId() {
      return jobId;
    },
    send(event: WorkerEvent) {
      const to = WORKER_TABLE.get(`${state}|${event.type}`);
      if (!to) throw new Error(`Worker cannot "${event.type}" while ${state}`);
      state = to;
      jobId = event.type === "run" ? event.jobId : null;
    },
  };
}
export type Worker = ReturnType<typeof createWorker>;
