// The data loader of one data-parallel rank: ordered positions -> raw rows -> samples -> buffer ->
// packed micro-batches, `gradAccum` of them per optimizer step. Its whole position is a small
// LoaderState (state.ts); restoring it continues bit-identically.
import type { MicroBatch, StepBatch } from "./batch.ts";
import { EpochOrder } from "./order.ts";
import { budgetAt, packMicroBatch, paddingMicroBatch, takeDynamic } from "./packing.ts";
import { planDynamicSteps } from "./plan.ts";
import { defaultKeys, makeSample, type Sample, type SampleSpec } from "./samples.ts";
import { expandTrainPath, indexSources, readUnit, type RawRow, type SourceIndex } from "./sources.ts";
import { type BufRef, type LoaderState, reshardStates, streamAt, streamFor } from "./state.ts";
import { makeTemplate } from "./templates.ts";
import { loadTokenizer, resolveTokenizer, type TextTokenizer } from "./tokenizer.ts";
import { initImageDecoders } from "./images/decode.ts";
import type { VisionOptions } from "./multimodal.ts";

/** The config fields the loader reads (VeOmni v0.1 names; the project's Config fits this shape). */
export interface DataLoaderConfig {
  data: {
    train_path: string | null;
    data_type: "plaintext" | "conversation";
    text_keys?: string | null;
    image_keys?: string;
    chat_template?: string;
    max_seq_len: number;
    train_size?: number;
    on_bad_sample?: "error" | "skip";
    /** false: the last, partial step of the data is trained too; every rank runs to the last step
     *  of the rank with the most data, padding with no-loss micro-batches (VeOmni's padding_flag). */
    drop_last?: boolean;
  };
  train: {
    micro_batch_size: number;
    global_batch_size?: number | null;
    num_train_epochs: number;
    dyn_bsz: boolean;
    dyn_bsz_margin?: number;
    dyn_bsz_buffer_size: number;
    bsz_warmup_ratio?: number;
    bsz_warmup_init_mbtoken?: number;
    seed: number;
    max_steps?: number | null;
  };
}

/** pino-compatible subset. */
export interface LoaderLog { info(obj: object, msg: string): void; warn(obj: object, msg: string): void }

export interface LoaderOptions {
  dpRank: number;
  dpSize: number;
  /** Model vocabulary size (config.json vocab_size): every token id must be below it. */
  vocabSize: number;
  /** Tokenizer folder, tokenizer.json path, or a name for resolveTokenizer ("qwen3"); null for pre-tokenized data only. */
  tokenizerPath: string | null;
  log?: LoaderLog;
  /** Base for relative paths (default: the process's working directory). */
  cwd?: string;
  /** A vision-language model's image token ids and processor (loadVisionOptions); null or
   *  absent for a text model (rows with images are then bad samples). */
  vision?: VisionOptions | null;
}

export interface LoaderInfo {
  files: number;
  units: number;
  /** Samples (rows / documents) in one epoch over all ranks. */
  totalSamples: number;
  gradAccum: number;
  /** Token budget of a micro-batch after warmup (dyn_bsz), micro_batch_size * max_seq_len - margin. */
  budget: number;
  /** Optimizer steps the schedule should plan for: max_steps, else an estimate (VeOmni's); with
   *  data.drop_last false the exact count (dyn_bsz: planned from every sample's length, after plan()). */
  trainSteps: number;
}

interface Buffered extends BufRef { sample: Sample }

export class DataLoader {
  readonly info: LoaderInfo;
  private idx: SourceIndex;
  private order: EpochOrder;
  private spec: SampleSpec;
  private st: LoaderState;
  private buf: Buffered[] = [];
  private unitCache = new Map<number, RawRow[]>();
  private done = false;
  /** data.drop_last false: run every rank to info.trainSteps (the longest rank's step count),
   *  padding with partial and then no-loss micro-batches once this rank's share is used up. */
  private keepLast: boolean;
  /** keepLast with dyn_bsz and no max_steps: info.trainSteps still has to be planned (plan()). */
  private unplanned: boolean;
  /** Steps the bsz warmup ramps over: max_steps, else VeOmni's estimate (not the planned count,
   *  which depends on the budgets). */
  private warmupBase: number;

  /** The tokenizer once built (null: none configured); undefined until a sample needs it. */
  private tk: TextTokenizer | null | undefined = undefined;

  constructor(private cfg: DataLoaderConfig, private opts: LoaderOptions) {
    const { data, train } = cfg;
    const { dpRank, dpSize } = opts;
    if (!data.train_path) throw new Error("data.train_path is required");
    if (!(dpRank >= 0 && dpRank < dpSize)) throw new Error(`data loader: dp rank ${dpRank} outside [0, ${dpSize})`);
    const mbs = train.micro_batch_size;
    const gbs = train.global_batch_size ?? mbs * dpSize;
    if (gbs % (mbs * dpSize) !== 0)
      throw new Error(`train.global_batch_size ${gbs} is not a multiple of micro_batch_size ${mbs} x data-parallel size ${dpSize}`);
    const gradAccum = gbs / (mbs * dpSize);
    // The tokenizer is built on the first text sample (conversations: now, for the template): a
    // parsed tokenizer.json holds ~70 MiB of this thread's heap (~120 MiB while parsing, Qwen's),
    // dead weight for pre-tokenized input_ids rows (issue 17's memory per rank). The folder is
    // checked now, so a wrong path still fails at start.
    if (opts.tokenizerPath) resolveTokenizer(opts.tokenizerPath, opts.cwd);
    const loadNow = data.data_type === "conversation";
    if (loadNow) this.tokenizerOf();
    const tokenizer = this.tk;
    const keys = defaultKeys(data.data_type, data.text_keys);
    const template = loadNow && tokenizer
      ? makeTemplate(data.chat_template ?? "default", { bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken, tokenizerTemplate: tokenizer.chatTemplate })
      : null;
    const imageKeys = (data.image_keys ?? "images").split(",").map((k) => k.trim()).filter(Boolean);
    const self = this;
    this.spec = {
      dataType: data.data_type, keys, maxSeqLen: data.max_seq_len, vocabSize: opts.vocabSize, template, imageKeys, vision: opts.vision ?? null,
      get tokenizer() { return self.tokenizerOf(); },
    };
    const files = expandTrainPath(data.train_path, opts.cwd);
    this.idx = indexSources(files, keys, data.on_bad_sample === "skip", imageKeys);
    for (const f of this.idx.emptyFiles) opts.log?.warn({ file: f }, "skipping empty data file");
    const N = this.idx.total;
    if (N === 0) throw new Error(`empty dataset: 0 samples in ${files.length} file(s) of data.train_path '${data.train_path}'`);
    this.keepLast = data.drop_last === false;
    // one step needs gradAccum micro-batches of >= 1 sample (dyn_bsz) or exactly mbs samples, on every rank
    const need = this.keepLast ? 1 : train.dyn_bsz ? gradAccum * dpSize : gbs;
    if (N < need) throw new Error(`too few samples for one step: ${N} samples in data.train_path, one step needs ${need} (global_batch_size ${gbs} = micro_batch_size ${mbs} x dp ${dpSize} x grad accum ${gradAccum}${train.dyn_bsz ? ", dyn_bsz: >= 1 sample per micro-batch" : ""})`);
    this.order = new EpochOrder(this.idx.units.map((u) => u.count), train.seed);
    const budget = mbs * data.max_seq_len - (train.dyn_bsz_margin ?? 0);
    this.warmupBase = train.max_steps ?? Math.max(1, Math.floor(((data.train_size ?? 10_000_000) * train.num_train_epochs) / (gbs * data.max_seq_len)));
    this.unplanned = this.keepLast && train.dyn_bsz && train.max_steps == null;
    const trainSteps = train.max_steps ?? Math.max(1, train.dyn_bsz
      ? Math.floor(((data.train_size ?? 10_000_000) * train.num_train_epochs) / (gbs * data.max_seq_len))
      : this.keepLast
        // rank 0 holds the most samples, ceil(N / dp) per epoch, gbs / dp of them per step
        ? Math.ceil((Math.ceil(N / dpSize) * train.num_train_epochs) / (gbs / dpSize))
        : Math.floor((N * train.num_train_epochs) / gbs));
    this.info = { files: files.length, units: this.idx.units.length, totalSamples: N, gradAccum, budget, trainSteps };
    this.st = {
      version: 1, dpRank, dpSize, seed: train.seed, total: N, units: this.idx.units.length,
      step: 0, epoch: 0, cursor: 0, streams: [], buffer: [], skipped: 0,
    };
    opts.log?.info({ ...this.info, dpRank, dpSize }, "data loader ready");
  }

  /**
   * data.drop_last false with dyn_bsz (and no max_steps): sets info.trainSteps to the step count of
   * the rank with the most data, planned from the token length of every sample (each is read and
   * tokenized once for this, on every rank: the same numbers everywhere, so all ranks agree with
   * no message). Bad samples fail here, before the first step (or are skipped, as in training).
   * A no-op otherwise; nextStep() calls it first when nobody did.
   */
  async plan(): Promise<LoaderInfo> {
    if (!this.unplanned) return this.info;
    const { train } = this.cfg;
    const offset: number[] = [];
    let n = 0;
    for (const u of this.idx.units) { offset.push(n); n += u.count; }
    const lens = new Int32Array(n);
    if (this.spec.vision) await initImageDecoders();
    for (let u = 0; u < this.idx.units.length; u++) {
      const rows = await readUnit(this.idx, this.idx.units[u]);
      for (let row = 0; row < rows.length; row++) {
        const r = makeSample(rows[row], this.spec);
        if ("bad" in r && this.cfg.data.on_bad_sample !== "skip") throw new Error(`bad sample: ${r.bad} (data.on_bad_sample: skip counts and skips these)`);
        lens[offset[u] + row] = "bad" in r ? -1 : r.ids.length;
      }
    }
    const steps = await planDynamicSteps({
      lengthAt: (epoch, pos) => { const { unit, row } = this.order.locate(epoch, pos); return lens[offset[unit] + row]; },
      total: this.st.total, dpSize: this.opts.dpSize, epochs: train.num_train_epochs, gradAccum: this.info.gradAccum,
      bufferSize: train.dyn_bsz_buffer_size, budget: (step) => this.budgetAt(step),
    });
    this.info.trainSteps = Math.max(1, ...steps);
    this.unplanned = false;
    this.opts.log?.info({ steps_per_rank: steps, train_steps: this.info.trainSteps }, "data.drop_last false: planned every rank's dynamic batches");
    return this.info;
  }

  /** The next optimizer step's micro-batches for this rank, or null when max_steps is reached or
   *  the last epoch cannot fill a whole step (the remainder is dropped, as drop_last; with
   *  drop_last false: after info.trainSteps steps, the last ones padded where this rank ran out). */
  async nextStep(): Promise<StepBatch | null> {
    const { train } = this.cfg;
    if (this.unplanned) await this.plan();
    if (this.done || (train.max_steps != null && this.st.step >= train.max_steps)) return null;
    if (this.keepLast && train.max_steps == null && this.st.step >= this.info.trainSteps) return null;
    const microBatches: MicroBatch[] = [];
    for (let m = 0; m < this.info.gradAccum; m++) {
      let mb = train.dyn_bsz ? await this.dynamicMicroBatch() : await this.staticMicroBatch();
      if (!mb && this.keepLast) mb = paddingMicroBatch();
      if (!mb) { this.done = true; return null; }
      microBatches.push(mb);
    }
    return { step: this.st.step++, microBatches };
  }

  /** This rank's position; JSON-serialisable, for the checkpoint. */
  state(): LoaderState {
    const s = this.st;
    return { ...s, streams: s.streams.map((x) => ({ ...x, pending: [...x.pending] })), buffer: this.buf.map(({ epoch, pos }) => ({ epoch, pos })) };
  }

  /** Restores this rank from its own state, or from every rank's state of a checkpoint saved on
   *  any number of ranks (reshardStates; refused with both sizes where not exact). */
  async restore(saved: LoaderState | LoaderState[]): Promise<void> {
    const all = Array.isArray(saved) ? saved : [saved];
    if (this.keepLast && this.cfg.train.dyn_bsz && this.cfg.train.max_steps == null && all[0].dpSize !== this.opts.dpSize)
      throw new Error(`loader state saved on ${all[0].dpSize} data-parallel ranks cannot resume on ${this.opts.dpSize} with data.drop_last false and train.dyn_bsz: the run's steps were planned for ${all[0].dpSize} ranks; resume on ${all[0].dpSize}, or set data.drop_last true`);
    const mine = all.length === 1 && all[0].dpSize === this.opts.dpSize
      ? all[0] : reshardStates(all, this.opts.dpSize)[this.opts.dpRank];
    const want = { seed: this.st.seed, total: this.st.total, units: this.st.units };
    for (const k of ["seed", "total", "units"] as const)
      if (mine[k] !== want[k]) throw new Error(`loader state: ${k} ${mine[k]} in the checkpoint, ${want[k]} now (different data or seed)`);
    if (mine.dpRank !== this.opts.dpRank || mine.dpSize !== this.opts.dpSize)
      throw new Error(`loader state of rank ${mine.dpRank}/${mine.dpSize} given to rank ${this.opts.dpRank}/${this.opts.dpSize}`);
    this.st = { ...mine, buffer: [], streams: mine.streams.map((x) => ({ ...x, pending: [...x.pending] })) };
    this.done = false;
    this.buf = [];
    for (const b of mine.buffer) {
      const r = await this.sampleAt(b.epoch, b.pos);
      if (r) this.buf.push({ ...b, sample: r });
    }
  }

  get skipped(): number { return this.st.skipped; }

  // ---- reading --------------------------------------------------------------------------

  /** Next position of this rank's streams, moving into the next epoch at the end of one. */
  private nextRef(): BufRef | null {
    for (;;) {
      const st = streamFor(this.st, this.st.epoch);
      const pos = streamAt(st, this.st.cursor, this.st.total);
      if (pos >= 0) { this.st.cursor++; return { epoch: this.st.epoch, pos }; }
      if (this.st.epoch + 1 >= this.cfg.train.num_train_epochs) return null;
      this.st.epoch++;
      this.st.cursor = 0;
      this.st.streams = this.st.streams.filter((x) => x.epoch >= this.st.epoch);
    }
  }

  private async sampleAt(epoch: number, pos: number): Promise<Sample | null> {
    const { unit, row } = this.order.locate(epoch, pos);
    let rows = this.unitCache.get(unit);
    if (!rows) {
      rows = await readUnit(this.idx, this.idx.units[unit]);
      // a unit of parquet rows holding image bytes can be hundreds of MB: keep only the one being
      // read (positions of an epoch walk a unit's rows together, so this costs no rereads)
      const u = this.idx.units[unit];
      const keep = u.kind === "parquet" && this.idx.parquetImages.get(u.file) ? 0 : 3;
      while (this.unitCache.size > keep) this.unitCache.delete(this.unitCache.keys().next().value!);
      this.unitCache.set(unit, rows);
    }
    if (this.spec.vision) await initImageDecoders();
    const r = makeSample(rows[row], this.spec);
    if ("bad" in r) {
      if (this.cfg.data.on_bad_sample !== "skip") throw new Error(`bad sample: ${r.bad} (data.on_bad_sample: skip counts and skips these)`);
      this.st.skipped++;
      if (this.st.skipped <= 10 || this.st.skipped % 1000 === 0) this.opts.log?.warn({ skipped: this.st.skipped }, `skipping bad sample: ${r.bad}`);
      return null;
    }
    return r;
  }

  /** Reads one more good sample into the buffer; false at the end of the data. */
  private async fill(): Promise<boolean> {
    for (;;) {
      const ref = this.nextRef();
      if (!ref) return false;
      const s = await this.sampleAt(ref.epoch, ref.pos);
      if (s) { this.buf.push({ ...ref, sample: s }); return true; }
    }
  }

  private async staticMicroBatch(): Promise<MicroBatch | null> {
    const mbs = this.cfg.train.micro_batch_size;
    while (this.buf.length < mbs) {
      if (await this.fill()) continue;
      if (!this.keepLast) return null;
      // drop_last false: what is left (fewer samples), or one token that carries no loss; the
      // global token normalisation counts only valid tokens, so the loss is that of the real samples
      if (this.buf.length === 0) return paddingMicroBatch();
      break;
    }
    return packMicroBatch(this.buf.splice(0, mbs).map((b) => b.sample), this.spec.vision?.preprocessor);
  }

  /** The tokenizer, built on first use (null when model.tokenizer_path gives none). */
  private tokenizerOf(): TextTokenizer | null {
    if (this.tk === undefined) this.tk = this.opts.tokenizerPath ? loadTokenizer(this.opts.tokenizerPath, this.opts.cwd) : null;
    return this.tk;
  }

  /** Engine of the tokenizer if one was built ("fast": bpe.ts, "hf"), else null (none configured,
   *  or only pre-tokenized samples read so far). */
  get tokenizerEngine(): "fast" | "hf" | null {
    return this.tk?.engine ?? null;
  }

  private budgetAt(step: number): number {
    const { train } = this.cfg;
    return budgetAt(step, this.info.budget, train.bsz_warmup_ratio ?? 0, train.bsz_warmup_init_mbtoken ?? 200, this.warmupBase);
  }

  // Refill to >= dyn_bsz_buffer_size samples holding >= one budget of tokens, then first-fit.
  private async dynamicMicroBatch(): Promise<MicroBatch | null> {
    const samples = await takeDynamic(this.buf, (b) => b.sample.ids.length, () => this.fill(), this.cfg.train.dyn_bsz_buffer_size, this.budgetAt(this.st.step));
    return samples && packMicroBatch(samples.map((b) => b.sample), this.spec.vision?.preprocessor);
  }
}

/** Builds the loader of one data-parallel rank (indexes the files, loads the tokenizer). */
export function createDataLoader(cfg: DataLoaderConfig, opts: LoaderOptions): DataLoader {
  return new DataLoader(cfg, opts);
}
