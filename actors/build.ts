// One way to set up training, for the in-process path (actors/local.ts) and every worker
// (actors/train_runner.ts): kernels -> model -> parallel plans (parallel/, from the mesh) ->
// dataloader actor (its own thread, prefetching this rank's data-parallel share) -> Trainer.
import type { Config, Logger } from "../configs/index.ts";
import { createKernels, peakFlops, type Kernels } from "../kernels/index.ts";
import { DataLoaderWorker, loadVisionOptions, type MicroBatch } from "../data/index.ts";
import type { Comm } from "../mesh/index.ts";
import { modelWithSource, type DecoderLM, type WeightSource } from "../models/index.ts";
import { parallelize, type Parallelism } from "../parallel/index.ts";
import { Trainer } from "./trainer.ts";
import { tokenizerSource } from "./preflight.ts";

/** Peak FLOP/s of the CPU backend for the matmul dtype in use (measured once: kernels/cpu/fast/peak.ts). */
export function cpuPeakFlops(threads: number, dtype: "f32" | "bf16" = "f32"): number {
  return peakFlops(threads, dtype);
}

/** Training FLOPs of one packed micro-batch: 6 x matmul params x tokens + attention
 *  (PaLM convention, no causal discount): 12 x L x (NH*HS) x n^2 summed over its samples.
 *  Matmul params as /work/shared/bench/llama_model.py: all but an untied input embedding.
 *  A sequence-parallel slice (1/P of the row) computes 1/P of the whole row's attention. */
export function microBatchFlops(model: DecoderLM, mb: MicroBatch): number {
  const c = model.config;
  const matmul = model.layout.totalNumel - (c.tied ? 0 : c.V * c.C);
  const T = mb.inputIds.length;
  let attn = 0;
  for (let s = 0; s + 1 < mb.cuSeqlens.length; s++) {
    const n = mb.cuSeqlens[s + 1] - mb.cuSeqlens[s];
    attn += 12 * c.L * c.NH * c.HS * n * n;
  }
  return 6 * matmul * T + attn * (T / (mb.seqParallel?.fullLength ?? T));
}

/**
 * The model of one rank as a meta model (no parameters yet) and where its values come from:
 * parallelize() builds each rank's FSDP shards from the source (ranged reads, sharded init), or
 * materializes whole units for other plans. VeOmni's `train.init_device: meta`, for every
 * init_device value: the values are the same, only the memory differs. Close the source.
 * Under Ulysses a rank holds ceil(row / P) tokens of a packed row, so its activation buffers are
 * sized for that slice (the point of sequence parallelism); RoPE still covers the whole row's positions.
 */
export function buildModel(k: Kernels, config: Config): { model: DecoderLM; source: WeightSource } {
  const row = config.train.micro_batch_size * config.data.max_seq_len;
  const P = config.train.ulysses_parallel_size;
  const opts = {
    maxTokens: Math.ceil(row / P),
    gradientCheckpointing: config.train.enable_gradient_checkpointing,
    freezeVision: config.train.freeze_vit,
    ...(P > 1 ? { maxPositions: Math.max(row, config.data.max_seq_len) } : {}),
    meta: true,
  };
  return modelWithSource(k, config.model, config.train.seed, opts);
}

export interface TrainingSetup {
  k: Kernels;
  threads: number;
  model: DecoderLM;
  plan: Parallelism;
  loader: DataLoaderWorker;
  trainer: Trainer;
  /** Optimizer steps to run: train.max_steps, else the loader's estimate over num_train_epochs. */
  totalSteps: number;
  /** Peak FLOP/s of the backend for MFU (0 where unknown). */
  peakFlops: number;
}

export interface BuildOptions {
  rank: number;
  world: number;
  /** The started transport (world > 1), else null. */
  comm: Comm | null;
  logger: Logger;
  /** A backend made by the caller (tests); default: createKernels from config.kernels. */
  kernels?: Kernels;
  /** CPU threads when config.kernels.threads is 0. */
  threads: number;
}

export async function buildTraining(config: Config, o: BuildOptions): Promise<TrainingSetup> {
  const t = config.train;
  const threads = config.kernels.threads || o.threads;
  const k = o.kernels ?? (await createKernels({ backend: config.kernels.backend, threads, mixedPrecision: config.train.enable_mixed_precision }));
  o.logger.info({ backend: k.description }, "kernels");
  const { model, source } = buildModel(k, config);
  const c = model.config;
  let plan: Parallelism;
  try {
    plan = await parallelize({ k, model, config, rank: o.rank, world: o.world, comm: o.comm, source });
  } finally {
    source.close();
  }
  o.logger.info({ model_type: c.modelType, params: model.layout.totalNumel, layers: c.L, hidden: c.C, vocab: c.V, tied: c.tied, from: source.what,
    activation_mb: Math.round(model.activationBytes / 2 ** 20), gradient_checkpointing: model.opts.gradientCheckpointing }, "model ready");
  // With max_steps set, the data repeats (next epoch) until the steps are done.
  const dataCfg = t.max_steps != null ? { ...config, train: { ...t, num_train_epochs: Number.MAX_SAFE_INTEGER } } : config;
  const loader = await DataLoaderWorker.start(dataCfg, {
    dpRank: plan.dataRank, dpSize: plan.dataSize, vocabSize: c.V,
    tokenizerPath: tokenizerSource(config), log: o.logger,
    vision: loadVisionOptions(config.model.config_path, config.model.model_path), // null for a text model
  }, { prefetch: Math.max(1, config.data.prefetch_factor) });
  const totalSteps = t.max_steps ?? loader.info.trainSteps;
  const trainer = new Trainer(model, {
    schedule: { lr: t.lr, lr_min: t.lr_min, lr_start: t.lr_start, train_steps: totalSteps, lr_warmup_ratio: t.lr_warmup_ratio, lr_decay_style: t.lr_decay_style, lr_decay_ratio: t.lr_decay_ratio },
    weightDecay: t.weight_decay, maxGradNorm: t.max_grad_norm, collectives: plan.collectives, shards: plan.shards,
    vitLr: t.vit_lr,
  });
  return { k, threads, model, plan, loader, trainer, totalSteps, peakFlops: k.backend === "cpu" ? cpuPeakFlops(threads, config.train.enable_mixed_precision ? "bf16" : "f32") : 0 };
}
