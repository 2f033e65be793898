// Supervision: one-for-all, as SPMD training needs. Any rank failing stops every rank; the job
// then either fails (exit code + a reason naming the rank) or restarts from the last committed
// checkpoint with a new epoch. A pure function so the policy is unit-tested apart from processes.
import { assertNever } from "./protocol.ts";

export type Failure =
  /** a locally spawned worker process ended before the job did. */
  | { kind: "exited"; rank: number; pid: number; code: number | null; signal: string | null; stderrTail: string }
  /** no heartbeat from the rank for `silentS` seconds (deadline `deadlineS`). */
  | { kind: "silent"; rank: number; silentS: number; deadlineS: number }
  /** the rank reported an error (exception in a stage actor, collective deadline, ...). */
  | { kind: "reported"; rank: number; step: number; error: string }
  /** the user interrupted the coordinator (Ctrl-C / SIGTERM). */
  | { kind: "interrupted"; signal: string };

export interface History {
  /** restarts done so far in this job. */
  restarts: number;
  maxRestarts: number;
  /** newest committed checkpoint, null if none (then a restart has nothing to resume from). */
  lastCheckpoint: string | null;
}

export type Decision =
  | { action: "stop"; exitCode: number; reason: string }
  /** fromCheckpoint: output_dir-relative commit to resume from; null = from step 0 (nothing committed yet). */
  | { action: "restart"; reason: string; fromCheckpoint: string | null };

/** Human sentence for a failure; always names the rank (or the signal). */
export function describe(f: Failure): string {
  switch (f.kind) {
    case "exited": {
      const how = f.signal ? `was killed by ${f.signal}` : `exited with code ${f.code}`;
      const tail = f.stderrTail.trim() ? `; last output: ${f.stderrTail.trim().split("\n").slice(-3).join(" | ")}` : "";
      return `rank ${f.rank} (pid ${f.pid}) ${how} before the job ended${tail}`;
    }
    case "silent":
      return `rank ${f.rank} is dead: no heartbeat for ${f.silentS.toFixed(1)} s (launch.dead_after_s = ${f.deadlineS})`;
    case "reported":
      return `rank ${f.rank} failed at step ${f.step}: ${f.error}`;
    case "interrupted":
      return `interrupted by ${f.signal}`;
    default:
      return assertNever(f, "failure");
  }
}

export function decide(f: Failure, h: History): Decision {
  const reason = describe(f);
  switch (f.kind) {
    case "interrupted":
      // The user asked to stop: never restart; 130 is the shell's code for Ctrl-C.
      return { action: "stop", exitCode: f.signal === "SIGINT" ? 130 : 143, reason };
    case "exited":
    case "silent":
    case "reported":
      // With restarts left: resume from the newest commit, or from scratch when none landed yet.
      if (h.restarts < h.maxRestarts) {
        const from = h.lastCheckpoint === null ? "from step 0 (no checkpoint committed yet)" : `from ${h.lastCheckpoint}`;
        return { action: "restart", reason: `${reason}; restart ${h.restarts + 1}/${h.maxRestarts} ${from}`, fromCheckpoint: h.lastCheckpoint };
      }
      return { action: "stop", exitCode: 1, reason: h.maxRestarts === 0 ? reason : `${reason}; restarts exhausted (${h.restarts}/${h.maxRestarts})` };
    default:
      return assertNever(f, "failure");
  }
}
