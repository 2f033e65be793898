// One object per rank that does what a training loop needs from checkpoints, so the trainer's
// step loop stays short: resume at start, maybe-save after each step, finish at the end.
//   RankCheckpointer: the checkpoint actor of one rank (save -> durable report; load).
//   LocalCheckpointing: world size 1, which also commits (no coordinator), writes model_assets
//   at start and, with save_hf_weights, the Hugging Face export at the end.
// Multi-rank jobs: each worker holds a RankCheckpointer and sends `ticket.durable`'s report to
// the coordinator, whose CommitTracker commits (commit_tracker.ts).

import { join } from "node:path";
import { type AssetSources, writeModelAssets } from "./assets.ts";
import { CommitTracker } from "./commit_tracker.ts";
import { resolveLoadPath } from "./commit.ts";
import { loadAllExtra, loadShard, openCheckpoint } from "./load.ts";
import { mergeToHf, type ExportDType } from "./merge.ts";
import { AsyncSaver, type SaveTicket } from "./saver.ts";
import { checkpointDir, isSaveStep } from "./schedule.ts";
import { type UnitBuffers, replicatedStatePieces, stateShapes, statePieces } from "./trainer_state.ts";

/** What a rank's trainer exposes to checkpoints. */
export interface Checkpointable {
  /** This rank's buffers (host arrays: the CPU backend's `tensor.host`; a device backend reads first). */
  units(): UnitBuffers[];
  /** JSON-able extra state: AdamW step count, data loader state, RNG, counters (encodeExtra types).
   *  May be async (the data loader thread answers by message). */
  extraState(): unknown | Promise<unknown>;
  /** After a load filled units(): restore extra state from every saved rank's (`all`, index = saved
   *  rank; a data loader reshards them) and upload buffers on a device backend. */
  restore(all: unknown[]): void | Promise<void>;
}

export interface RankOptions {
  outputDir: string;
  rank: number;
  worldSize: number;
  /** DDP: every rank holds whole units and saves a 1/world share; FSDP: each its shard. */
  replicated: boolean;
  /** The job's epoch: in the file names, so a stale writer of an older epoch cannot clobber them. */
  epoch?: number;
}

export class RankCheckpointer {
  readonly saver: AsyncSaver;
  constructor(readonly o: RankOptions) {
    this.saver = new AsyncSaver(o.rank);
  }

  /** Save the state after `step` optimizer steps, file names carrying `epoch` (default: the
   *  options' one; a worker passes its current epoch, which an adoption advances). Blocks for the
   *  staging copy only. */
  async save(step: number, c: Checkpointable, epoch = this.o.epoch): Promise<SaveTicket> {
    const state = await c.extraState();
    const units = c.units();
    const pieces = this.o.replicated ? replicatedStatePieces(units, this.o.worldSize, this.o.rank) : statePieces(units);
    return this.saver.save({ dir: checkpointDir(this.o.outputDir, step), step, epoch, pieces, extra: { step, rank: this.o.rank, state } });
  }

  /** Load a committed checkpoint (any saved world size) into c; returns its step. */
  async load(dir: string, c: Checkpointable): Promise<number> {
    const meta = openCheckpoint(dir);
    const units = c.units();
    loadShard(dir, { expected: stateShapes(units), targets: statePieces(units) }, meta);
    const extras = loadAllExtra(dir, meta) as { step: number; state: unknown }[];
    await c.restore(extras.map((e) => e.state));
    return meta.step;
  }

  close(): Promise<void> {
    return this.saver.close();
  }
}

export interface LocalOptions {
  outputDir: string;
  save_steps: number;
  save_epochs: number;
  save_hf_weights: boolean;
  /** train.load_checkpoint_path: null, "auto" or a checkpoint folder. */
  load_checkpoint_path: string | null;
  /** Where model_assets come from (model_path, tokenizer_path, config). */
  assets: AssetSources;
  hfDtype?: ExportDType;
  log?: { info(obj: object, msg: string): void };
}

export class LocalCheckpointing {
  private rank: RankCheckpointer;
  private tracker: CommitTracker;
  private commits: Promise<void>[] = [];
  private lastSaved = -1;

  constructor(readonly o: LocalOptions) {
    this.rank = new RankCheckpointer({ outputDir: o.outputDir, rank: 0, worldSize: 1, replicated: true });
    this.tracker = new CommitTracker({ outputDir: o.outputDir, worldSize: 1, mesh: {}, epoch: 0 });
  }

  /** At start: write model_assets, resume if asked. Returns the number of steps already done. */
  async start(c: Checkpointable): Promise<number> {
    writeModelAssets(this.o.outputDir, this.o.assets);
    const dir = resolveLoadPath(this.o.load_checkpoint_path, this.o.outputDir);
    if (!dir) return 0;
    const step = await this.rank.load(dir, c);
    this.o.log?.info({ dir, step }, "resumed from checkpoint");
    return (this.lastSaved = step);
  }

  /** After optimizer step `done` (1-based count): save if due; the commit lands in the background. */
  async afterStep(done: number, c: Checkpointable, epochEnded = false, epoch = 0): Promise<number | null> {
    if (!isSaveStep(this.o, done, epochEnded, epoch)) return null;
    return this.saveNow(done, c);
  }

  private async saveNow(done: number, c: Checkpointable): Promise<number> {
    this.tracker.begin(done);
    const ticket = await this.rank.save(done, c);
    this.lastSaved = done;
    this.commits.push(ticket.durable.then((rep) => {
      const r = this.tracker.onReport(0, rep);
      if (r?.kind === "committed") this.o.log?.info({ step: r.step, dir: r.dir }, "checkpoint committed");
      else if (r?.kind === "failed") throw new Error(r.reason);
    }));
    return ticket.stallMs;
  }

  /** End of training after `done` steps: wait for saves in flight; with save_hf_weights, save the
   *  final state if it is not saved yet and export it to global_step_N/hf_ckpt. Returns that folder. */
  async finish(done: number, c: Checkpointable): Promise<string | null> {
    if (this.o.save_hf_weights && this.lastSaved !== done && done > 0) await this.saveNow(done, c);
    await Promise.all(this.commits);
    await this.rank.close();
    if (!this.o.save_hf_weights || done === 0) return null;
    const dir = checkpointDir(this.o.outputDir, done);
    const save = join(dir, "hf_ckpt");
    mergeToHf({ loadDir: dir, modelAssetsDir: join(this.o.outputDir, "model_assets"), saveDir: save, shardBytes: 5e9, dtype: this.o.hfDtype ?? "BF16" });
    this.o.log?.info({ dir: save }, "Hugging Face weights written");
    return save;
  }
}
