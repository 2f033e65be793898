// The job record's copy kept in OUTPUT_DIR/job.json: written with every write of `<job>.state`,
// so `bun run jobs --dir OUTPUT_DIR` can say how a job ended after its embedded nats-server
// (and the KV record in it) is gone.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { JobState } from "./nats.ts";

export const JOB_COPY = "job.json";

export function writeJobCopy(outputDir: string, st: JobState): void {
  const path = join(outputDir, JOB_COPY);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(st, null, 1) + "\n");
  renameSync(tmp, path); // readers never see half a file
}

export function readJobCopy(outputDir: string): JobState | null {
  const path = join(outputDir, JOB_COPY);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as JobState;
  } catch {
    return null; // being replaced right now: the caller says there is no copy
  }
}
