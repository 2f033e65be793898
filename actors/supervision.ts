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
  | { kind: "interrupted"; signal: string }
  /** the job cannot run as configured (found before training: a clash with a committed
   *  checkpoint, a full disk, a missing checkpoint); restarting would meet it again. */
  | { kind: "refused"; error: string };

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

/**
 * The cause a worker's stderr gives for its end, as text: the first error-level pino line's
 * `err` (else its `msg`), or the first plain line that is not JSON; null when there is none.
 * Raw JSON log lines never reach a headline.
 */
export function causeOf(stderrTail: string): string | null {
  let plain: string | null = null;
  for (const line of stderrTail.split("\n")) {
    const l = line.trim();
    if (!l) continue;
    let o: unknown;
    try {
      o = JSON.parse(l);
    } catch {
      plain ??= l.startsWith("{") ? null : l; // a JSON line cut by the tail's start is not text
      continue;
    }
    if (!o || typeof o !== "object") continue;
    const r = o as { level?: number; err?: unknown; msg?: unknown };
    if (typeof r.level !== "number" || r.level < 50) continue;
    const err = typeof r.err === "string" ? r.err : (r.err as { message?: unknown } | undefined)?.message;
    if (typeof err === "string" && err) return err;
    if (typeof r.msg === "string" && r.msg) return r.msg;
  }
  return plain;
}

/** Human sentence for a failure; always names the rank (or the signal) and the cause as text. */
export function describe(f: Failure): string {
  switch (f.kind) {
    case "exited": {
      const how = f.signal ? `was killed by ${f.signal}` : `exited with code ${f.code}`;
      const cause = causeOf(f.stderrTail);
      return `rank ${f.rank} (pid ${f.pid}) ${how} before the job ended${cause ? `: ${cause}` : ""}`;
    }
    case "silent":
      return `rank ${f.rank} is dead: no heartbeat for ${f.silentS.toFixed(1)} s (launch.dead_after_s = ${f.deadlineS})`;
    case "reported":
      // step < 0: before the first step (building the model, loading a checkpoint, connecting)
      return f.step < 0 ? `rank ${f.rank} failed while starting: ${f.error}` : `rank ${f.rank} failed at step ${f.step}: ${f.error}`;
    case "interrupted":
      return `interrupted by ${f.signal}`;
    case "refused":
      return f.error;
    default:
      return assertNever(f, "failure");
  }
}

/** Worker exit codes that say "another rank failed" or "the coordinator went away" (worker.ts EXIT). */
const SECONDARY_EXIT = new Set([5, 6]);

/**
 * Which of several failures seen close together is the headline: the user's interrupt, then a
 * rank that died (killed, or exited on its own error) over the survivors that noticed it (their
 * links to it broke), then a reported error, then silence; ties go to the earliest. Lower wins.
 */
export function precedence(f: Failure): number {
  switch (f.kind) {
    case "interrupted":
    case "refused":
      return 0;
    case "exited":
      return f.signal ? 1 : f.code !== null && SECONDARY_EXIT.has(f.code) ? 5 : 2;
    case "reported":
      return 3;
    case "silent":
      return 4;
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
    case "refused":
      return { action: "stop", exitCode: 1, reason };
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
