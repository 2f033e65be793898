// The coordinator's bookkeeping for async saves: training goes on while ranks write, so rank
// reports for step N arrive during later steps. The tracker collects them per step, commits
// (commit.ts) when all ranks of the current epoch reported, and turns a rank's failure into an
// outcome naming that rank; the previous commit stays the newest. Reports of an older epoch
// are refused (fencing). No NATS here: actors/ feeds it messages and records outcomes in KV.

import { relative } from "node:path";
import type { Metadata } from "./format.ts";
import { commitCheckpoint, removeStaleEpochFiles } from "./commit.ts";
import type { RankReport } from "./rank_writer.ts";
import { checkpointDir } from "./schedule.ts";

export type CommitOutcome =
  | { kind: "committed"; step: number; dir: string; /** output_dir-relative, for JobState.last_checkpoint */ relDir: string; meta: Metadata; /** older epochs' uncommitted files removed from `dir` */ removed: string[] }
  | { kind: "failed"; step: number; rank: number; reason: string };

export interface TrackerOptions {
  outputDir: string;
  worldSize: number;
  mesh: Record<string, number>;
  epoch: number;
  /** the job's epoch as its record says now (commit.ts CommitInput.currentEpoch) */
  currentEpoch?: () => number | null;
}

export class CommitTracker {
  private pending = new Map<number, Map<number, RankReport>>();
  private failed = new Set<number>();
  /** Newest committed step (by this tracker), -1 if none. */
  lastCommitted = -1;

  constructor(private o: TrackerOptions) {}

  /** A save of `step` was commanded: reports are now expected from every rank. */
  begin(step: number): void {
    if (this.pending.has(step)) throw new Error(`checkpoint step ${step}: a save is already in flight`);
    this.pending.set(step, new Map());
  }

  /** Steps whose save is still waiting on ranks (the caller waits on these before ending the job). */
  get inFlight(): number[] {
    return [...this.pending.keys()];
  }

  /** A rank's durable report. Returns the commit once the last rank is in, else null. */
  onReport(epoch: number, report: RankReport): CommitOutcome | null {
    this.checkEpoch(epoch, report.rank, report.step);
    const got = this.pending.get(report.step);
    if (!got) {
      if (this.failed.has(report.step)) return null; // another rank already failed this save
      throw new Error(`checkpoint step ${report.step}: report from rank ${report.rank} but no save of that step was commanded`);
    }
    got.set(report.rank, report);
    if (got.size < this.o.worldSize) return null;
    this.pending.delete(report.step);
    const dir = checkpointDir(this.o.outputDir, report.step);
    try {
      const meta = commitCheckpoint({ dir, step: report.step, epoch: this.o.epoch, worldSize: this.o.worldSize, mesh: this.o.mesh, reports: [...got.values()], currentEpoch: this.o.currentEpoch });
      this.lastCommitted = Math.max(this.lastCommitted, report.step);
      return { kind: "committed", step: report.step, dir, relDir: relative(this.o.outputDir, dir), meta, removed: removeStaleEpochFiles(dir, meta) };
    } catch (e) {
      this.failed.add(report.step);
      return { kind: "failed", step: report.step, rank: -1, reason: (e as Error).message };
    }
  }

  /** A rank could not save `step` (disk full, non-finite values, writer crash): no commit. */
  onFailure(epoch: number, rank: number, step: number, error: string): CommitOutcome {
    this.checkEpoch(epoch, rank, step);
    this.pending.delete(step);
    this.failed.add(step);
    return { kind: "failed", step, rank, reason: `checkpoint step ${step} not committed: rank ${rank} failed to save: ${error}` };
  }

  private checkEpoch(epoch: number, rank: number, step: number): void {
    if (epoch !== this.o.epoch) {
      throw new Error(`checkpoint step ${step}: refused a report from rank ${rank} of stale epoch ${epoch} (current ${this.o.epoch})`);
    }
  }
}
