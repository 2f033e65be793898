// The Trainer: owns a model and its AdamW state and runs ONE optimizer step over a rank's
// micro-batches. The step reads like nanoGPT; the only awaits are the labelled sync points and
// the data-parallel collectives, which a parallel plan plugs in through `StepCollectives` (the
// default is a single process: identity). Plans attach to the model from outside (parallel/).
//
// Loss normalisation (VeOmni): each micro-batch's token-sum CE is scaled by 1 / (valid tokens of
// the whole global step, all ranks), so the accumulated gradient is the exact token mean.
// AdamW as torch.optim.AdamW: betas (0.9, 0.95), eps 1e-8, decoupled weight decay on matrices
// (linears, embeddings) only; clip_grad_norm_(max_grad_norm) on the global norm first.
// Vision-language models: a frozen vision tower (train.freeze_vit) is outside the optimizer and the
// grad norm (torch: requires_grad False); train.vit_lr gives the vision units their own peak lr,
// following the same schedule shape (lr_t * vit_lr / lr, as a per-group base lr under LambdaLR).
import { clipCoefficient, lrAt, type Kernels, type LrScheduleOptions, type Tensor } from "../kernels/index.ts";
import type { MicroBatch } from "../data/batch.ts";
import type { DecoderLM } from "../models/index.ts";
import { SINGLE_PROCESS, type OptimizerShards, type StepCollectives } from "../parallel/index.ts";

type F32 = Tensor<"f32">;

export interface TrainerOptions {
  schedule: LrScheduleOptions;
  weightDecay: number;
  maxGradNorm: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  collectives?: StepCollectives;
  shards?: OptimizerShards;
  /** train.vit_lr: peak lr of the vision units (null/absent: schedule.lr). */
  vitLr?: number | null;
}

export interface TrainerMetrics {
  step: number;
  /** The objective as VeOmni logs it (HF's outputs.loss): mean next-token CE over the global
   *  step's valid tokens, plus router_aux_loss_coef * aux_loss for MoE models with
   *  output_router_logits. */
  loss: number;
  /** MoE models: the two terms of `loss` (aux_loss unscaled by the coefficient, also when it is
   *  not in the objective; null for a family without HF's aux loss, DeepSeek-V3). */
  moe?: { lm_loss: number; aux_loss: number | null };
  /** Global L2 norm of the gradient before clipping. */
  grad_norm: number;
  lr: number;
  /** All tokens of the global step (valid or not). */
  tokens: number;
  /** Loss-carrying tokens of the global step. */
  valid_tokens: number;
  /** This rank's share: its summed token loss, valid tokens and tokens; MoE: its weighted aux
   *  loss sum (the global aux_loss is the sum over ranks) and tokens routed to each expert per
   *  sparse layer ([layer][expert], summed over ranks for the global load). */
  local: { lossSum: number; validTokens: number; tokens: number; auxSum?: number; expertLoad?: number[][] };
}

/** A contiguous run of one unit's owned slice with one weight-decay setting (offset in the slice). */
interface Segment { unit: number; offset: number; numel: number; decay: boolean; vision: boolean }

export class Trainer {
  readonly k: Kernels;
  /** AdamW exp_avg / exp_avg_sq, one flat buffer per unit's owned slice. */
  readonly m: F32[];
  readonly v: F32[];
  /** Optimizer steps taken (AdamW's t, 1-based inside the update); restored on resume. */
  optimizerSteps = 0;
  private segments: Segment[] = [];
  private lossBuf: F32;
  private sqBuf: F32;
  private comm: StepCollectives;
  private shards: OptimizerShards;
  /** Units the optimizer updates (all but a frozen vision tower's). */
  private trainable: number[];

  constructor(readonly model: DecoderLM, readonly opts: TrainerOptions) {
    const k = (this.k = model.k);
    const grads = model.allocGrads();
    this.shards = opts.shards ?? { slice: (u) => ({ start: 0, param: model.params[u], grad: grads[u] }) };
    const slices = model.layout.units.map((u) => this.shards.slice(u.index));
    this.m = slices.map((s, u) => k.alloc([s.param.numel], "f32", { name: `${model.layout.units[u].name}.exp_avg` }));
    this.v = slices.map((s, u) => k.alloc([s.param.numel], "f32", { name: `${model.layout.units[u].name}.exp_avg_sq` }));
    this.lossBuf = k.alloc([1], "f32", { shared: false, name: "loss" });
    this.sqBuf = k.alloc([1], "f32", { shared: false, name: "grad_sumsq" });
    this.comm = opts.collectives ?? SINGLE_PROCESS;
    this.trainable = model.trainableUnits;
    const vision = new Set(model.layout.visionUnits);
    for (const ui of this.trainable) {
      const u = model.layout.units[ui];
      const lo = slices[u.index].start, hi = lo + slices[u.index].param.numel;
      for (const p of u.params) {
        const a = Math.max(lo, p.offset), b = Math.min(hi, p.offset + p.numel); // parameter ∩ owned slice
        if (a >= b) continue;
        const last = this.segments[this.segments.length - 1];
        if (last && last.unit === u.index && last.decay === p.decay) last.numel += b - a;
        else this.segments.push({ unit: u.index, offset: a - lo, numel: b - a, decay: p.decay, vision: vision.has(u.index) });
      }
    }
  }

  /** One optimizer step (0-based `step` for the LR schedule) over this rank's micro-batches. */
  async step(step: number, microBatches: MicroBatch[]): Promise<TrainerMetrics> {
    const { k, model, comm } = this;
    const localValid = microBatches.reduce((a, mb) => a + mb.validTokens, 0);
    const localTokens = microBatches.reduce((a, mb) => a + (mb.seqParallel?.realTokens ?? mb.inputIds.length), 0); // padding excluded
    const validTokens = await comm.allReduceSum(localValid); // collective: global normaliser
    model.zeroGrads();
    model.routerStats?.resetStep();
    k.zero(this.lossBuf);
    for (const mb of microBatches) {
      await model.forward(mb, this.lossBuf, 1 / Math.max(1, validTokens));
      await model.backward();
    }
    await comm.syncGrads(model); // collective: DDP all-reduce / FSDP reduce-scatter
    const slices = model.layout.units.map((u) => this.shards.slice(u.index));
    k.sumSquares(this.sqBuf, this.trainable.map((u) => slices[u].grad));
    const gradNorm = Math.sqrt(await comm.allReduceSum((await k.read(this.sqBuf))[0])); // sync + collective
    const lr = lrAt(step, this.opts.schedule);
    this.adamw(slices, lr, clipCoefficient(gradNorm, this.opts.maxGradNorm));
    const lossSum = (await k.read(this.lossBuf))[0]; // sync point
    const [globalLoss, tokens] = [await comm.allReduceSum(lossSum), await comm.allReduceSum(localTokens)];
    const lmLoss = globalLoss / Math.max(1, validTokens);
    const local = { lossSum, validTokens: localValid, tokens: localTokens };
    const rs = model.routerStats, moe = model.config.moe;
    if (!rs || !moe) return { step, loss: lmLoss, grad_norm: gradNorm, lr, tokens, valid_tokens: validTokens, local };
    const aux = moe.auxLoss ? await comm.allReduceSum(rs.auxSum) : null; // collective: aux terms of every rank's micro-batches
    return {
      step, loss: lmLoss + (aux !== null && moe.outputRouterLogits ? moe.routerAuxLossCoef * aux : 0), moe: { lm_loss: lmLoss, aux_loss: aux },
      grad_norm: gradNorm, lr, tokens, valid_tokens: validTokens,
      local: { ...local, auxSum: moe.auxLoss ? rs.auxSum : undefined, expertLoad: rs.load.map((l) => Array.from(l)) },
    };
  }

  /** AdamW over every decay / no-decay run of every unit, grads scaled by the clip coefficient. */
  private adamw(slices: { param: F32; grad: F32 }[], lr: number, gradScale: number): void {
    const { k, opts } = this;
    const t = ++this.optimizerSteps;
    const vitLr = opts.vitLr == null ? lr : (lr * opts.vitLr) / opts.schedule.lr;
    for (const s of this.segments) {
      const at = (f: F32) => (s.numel === f.numel ? f : k.view(f, s.offset, [s.numel]));
      k.adamw(at(slices[s.unit].param), at(slices[s.unit].grad), at(this.m[s.unit]), at(this.v[s.unit]), {
        lr: s.vision ? vitLr : lr, beta1: opts.beta1 ?? 0.9, beta2: opts.beta2 ?? 0.95, eps: opts.eps ?? 1e-8,
        weightDecay: s.decay ? opts.weightDecay : 0, step: t, gradScale,
      });
    }
  }
}
