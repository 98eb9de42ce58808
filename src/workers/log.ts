/**
 * `ctx.log`: one JSON line per message on stderr, tagged with the job.
 *
 * @module
 */
import type { HandlerLog } from "../handlers/mod.ts";
import type { Job } from "../types.ts";

export function createJobLog(job: Pick<Job, "id" | "handler_name" | "attempt">): HandlerLog {
  const write = (level: string) => (message: string, fields?: Record<string, unknown>) => {
    const line = {
      level,
      job_id: job.id,
      handler: job.handler_name,
      attempt: job.attempt,
      message,
    };
    console.error(JSON.stringify({ ...line, ...fields }));
  };
  return { info: write("info"), warn: write("warn"), error: write("error") };
}
