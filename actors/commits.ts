// The coordinator's side of checkpoints: which steps to save, the commit once every rank of the
// epoch reported a durable write (checkpoint/CommitTracker), the KV record of the
// newest commit, and the Hugging Face export at the end. Ranks' reports arrive while training
// goes on; `drain` waits for the saves still in flight before the job ends.
import { dirname, join, relative } from "node:path";
import type { Logger } from "pino";
import type { Config } from "../configs/index.ts";
import { CommitTracker, committedClashes, isSaveStepOf, mergeToHf, writeModelAssets, checkpointDir, type RankReport } from "../checkpoint/index.ts";
import { readJobCopy } from "./job_copy.ts";

export class Commits {
  private tracker: CommitTracker;
  private drained: (() => void) | null = null;
  /** output_dir-relative folder of the newest commit, or null. */
  last: string | null = null;

  constructor(
    private config: Config,
    private outputDir: string,
    world: number,
    epoch: number,
    private log: Logger,
    /** a commit landed: record it (KV state) */
    private onCommitted: (relDir: string, step: number) => Promise<void>,
    /** a rank's save failed: the job fails naming the rank */
    private onFailed: (rank: number, step: number, error: string) => void,
  ) {
    const t = config.train;
    const rep = t.data_parallel_replicate_size;
    const mesh: Record<string, number> = t.data_parallel_mode === "ddp" ? { dp: world } : { dp_replicate: rep, dp_shard: world / rep };
    // fencing: the job record's copy in output_dir (beside the checkpoints, on the same file
    // system) says which epoch owns the job now; a coordinator replaced while frozen commits nothing
    this.tracker = new CommitTracker({ outputDir, worldSize: world, mesh, epoch, currentEpoch: () => readJobCopy(outputDir)?.epoch ?? null });
  }

  /** Write output_dir/model_assets (config, tokenizer) once at the start. */
  writeAssets(): void {
    const m = this.config.model;
    writeModelAssets(this.outputDir, { dirs: [m.model_path, m.tokenizer_path, m.config_path ? dirname(m.config_path) : null] });
  }

  /** Save after `done` of `total` steps? save_steps, save_epochs (checkpoint/schedule.ts
   *  epochEndingAt), and the last step when save_hf_weights wants the final weights. */
  due(done: number, total: number): boolean {
    const t = this.config.train;
    return isSaveStepOf(t, done, total) || (t.save_hf_weights && done === total);
  }

  /** Decided at start, before any step: a committed checkpoint this run would save again (a
   *  re-run into the same output_dir, a resume from an older checkpoint) is never overwritten. */
  refuseClashes(start: number, total: number): void {
    const clash = committedClashes(this.outputDir, start, total, (s) => this.due(s, total));
    if (clash.length === 0) return;
    const names = clash.map((c) => relative(this.outputDir, c.dir)).join(", ");
    throw new Error(
      `train.output_dir ${this.outputDir}: ${names} ${clash.length === 1 ? "is" : "are"} already committed and this run (steps ${start + 1} to ${total}) would save ${clash.length === 1 ? "it" : "them"} again; ` +
        `a commit is never overwritten: resume from the newest (train.load_checkpoint_path: auto) or use another train.output_dir`,
    );
  }

  /** A save of `done` steps is commanded (once: a save taken over by adoptSaves is already begun or committed). */
  begin(done: number): void {
    if (done > this.tracker.lastCommitted && !this.tracker.inFlight.includes(done)) this.tracker.begin(done);
  }

  /**
   * A coordinator that adopted live ranks (adopt.ts) takes over their saves: the newest commit on
   * disk is its last, and every later save some rank made (durable, failed or still being written)
   * is begun and fed the outcomes the ranks had (the rest arrive as reports). `epoch`: the new one.
   */
  adoptSaves(newestCommitted: number, epoch: number, saves: Array<{ rank: number; step: number; report?: unknown; error?: string }>): number[] {
    this.tracker.lastCommitted = Math.max(this.tracker.lastCommitted, newestCommitted);
    const steps = [...new Set(saves.map((s) => s.step))].filter((s) => s > this.tracker.lastCommitted).sort((a, b) => a - b);
    for (const s of steps) this.begin(s);
    for (const s of saves) {
      if (!steps.includes(s.step)) continue;
      if (s.error !== undefined) this.onFailed(s.rank, s.step, s.error);
      else if (s.report !== undefined) this.onReport(epoch, s.rank, s.step, s.report);
    }
    return steps;
  }

  onReport(epoch: number, rank: number, step: number, report: unknown): void {
    if (this.tracker.lastCommitted >= step) return; // a repeat after a reconnect
    let out;
    try {
      out = this.tracker.onReport(epoch, report as RankReport);
    } catch (e) {
      this.log.warn({ rank, step, err: (e as Error).message }, "checkpoint report refused");
      return;
    }
    if (out?.kind === "committed") {
      this.last = out.relDir;
      this.log.info({ step: out.step, dir: out.dir, epoch: out.meta.epoch }, "checkpoint committed");
      if (out.removed.length) this.log.info({ step: out.step, removed: out.removed }, `removed ${out.removed.length} file(s) an older epoch left uncommitted in ${out.relDir}`);
      void this.onCommitted(out.relDir, out.step).finally(() => this.checkDrained());
    } else if (out?.kind === "failed") this.onFailed(out.rank, out.step, out.reason);
  }

  /** Saves waiting on ranks. */
  get pending(): number {
    return this.tracker.inFlight.length;
  }

  /** Resolves when no save is in flight. */
  drain(): Promise<void> {
    if (this.tracker.inFlight.length === 0) return Promise.resolve();
    return new Promise((r) => (this.drained = r));
  }

  private checkDrained(): void {
    if (this.drained && this.tracker.inFlight.length === 0) this.drained();
  }

  /** With save_hf_weights: export the final step's checkpoint to global_step_N/hf_ckpt. */
  exportHf(done: number): string | null {
    if (!this.config.train.save_hf_weights || this.tracker.lastCommitted !== done) return null;
    const dir = checkpointDir(this.outputDir, done);
    const save = join(dir, "hf_ckpt");
    mergeToHf({ loadDir: dir, modelAssetsDir: join(this.outputDir, "model_assets"), saveDir: save, shardBytes: 5e9, dtype: "BF16" });
    this.log.info({ dir: save }, "Hugging Face weights written");
    return save;
  }
}
