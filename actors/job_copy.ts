// The job record's copy kept in OUTPUT_DIR/job.json: written with every write of `<job>.state`,
// so `bun run jobs --dir OUTPUT_DIR` can say how a job ended after its embedded nats-server
// (and the KV record in it) is gone.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { JobState } from "./nats.ts";

export const JOB_COPY = "job.json";

/** Throws an error naming the file (a full disk, a removed folder); leaves no temp file behind. */
export function writeJobCopy(outputDir: string, st: JobState): void {
  const path = join(outputDir, JOB_COPY);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, JSON.stringify(st, null, 1) + "\n");
    renameSync(tmp, path); // readers never see half a file
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new Error(`job record copy: writing ${path}: ${(e as Error).message}`);
  }
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

/**
 * Fencing of a coordinator taken over while frozen (SIGSTOP, a long pause), then woken: the copy
 * says which epoch owns the job now; a newer one than `epoch` means this coordinator must write
 * nothing more to output_dir (metrics lines, commits) and stop. Throws one line naming the file.
 */
export function assertOwnEpoch(outputDir: string | null, epoch: number, what: string): void {
  const cur = outputDir ? readJobCopy(outputDir)?.epoch ?? null : null;
  if (cur !== null && cur > epoch) {
    throw new Error(`${what}: refused: this coordinator's epoch ${epoch} is older than the job's current epoch ${cur} (${join(outputDir!, JOB_COPY)}): another coordinator took the job over; this one stops`);
  }
}
