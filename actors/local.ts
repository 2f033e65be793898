// Single-process training (world size 1): config -> kernels -> model -> data loader -> Trainer
// steps until train.max_steps, one JSON line per step in output_dir/metrics.jsonl and a progress
// line on a terminal. In-process: tests and tools call it; `bun run coordinator` runs every job, world
// size 1 included, as worker processes that run the same Trainer (actors/train_runner.ts).
import { appendFileSync, mkdirSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import type { Config, Logger } from "../configs/index.ts";
import { createKernels, type Kernels } from "../kernels/index.ts";
import { createDataLoader, type MicroBatch } from "../data/index.ts";
import { initModelFromConfig, loadPretrained, type DecoderLM } from "../models/index.ts";
import { Trainer, type TrainerMetrics } from "./trainer.ts";

/** One metrics.jsonl line. */
export interface StepRecord {
  step: number;
  loss: number;
  grad_norm: number;
  lr: number;
  tokens: number;
  tokens_per_s: number;
  mfu: number;
  peak_rss_mb: number;
}

export interface LocalRunResult {
  steps: number;
  records: StepRecord[];
  metricsPath: string;
  model: DecoderLM;
  trainer: Trainer;
}

export interface LocalRunOptions {
  /** A backend made by the caller (tests); default: createKernels from config.kernels. */
  kernels?: Kernels;
  /** Called after each optimizer step (checkpointing plugs in here). */
  onStep?: (step: number, trainer: Trainer, record: StepRecord) => void | Promise<void>;
}

/** Peak f32 FLOP/s of the CPU backend: ~100 GFLOP/s per thread (FMA peak measured on this machine kind). */
export function cpuPeakFlops(threads: number): number {
  return threads <= 1 ? 100e9 : threads === 2 ? 198e9 : 99e9 * threads;
}

/** Training FLOPs of one packed micro-batch: 6 x matmul params x tokens + attention
 *  (PaLM convention, no causal discount): 12 x L x (NH*HS) x n^2 summed over its samples.
 *  Matmul params as /work/shared/bench/llama_model.py: all but an untied input embedding. */
export function microBatchFlops(model: DecoderLM, mb: MicroBatch): number {
  const c = model.config;
  const matmul = model.layout.totalNumel - (c.tied ? 0 : c.V * c.C);
  let attn = 0;
  for (let s = 0; s + 1 < mb.cuSeqlens.length; s++) {
    const n = mb.cuSeqlens[s + 1] - mb.cuSeqlens[s];
    attn += 12 * c.L * c.NH * c.HS * n * n;
  }
  return 6 * matmul * mb.inputIds.length + attn;
}

export function buildModel(k: Kernels, config: Config): DecoderLM {
  const opts = {
    maxTokens: config.train.micro_batch_size * config.data.max_seq_len,
    gradientCheckpointing: config.train.enable_gradient_checkpointing,
  };
  if (config.model.model_path) return loadPretrained(k, config.model.model_path, opts);
  if (config.model.config_path) return initModelFromConfig(k, config.model.config_path, config.train.seed, opts);
  throw new Error("model.model_path (a Hugging Face folder) or model.config_path (config.json for random init) is required");
}

export async function runLocalTraining(config: Config, logger: Logger, o: LocalRunOptions = {}): Promise<LocalRunResult> {
  const { train } = config;
  const outputDir = train.output_dir;
  if (!outputDir) throw new Error("train.output_dir is required");
  const threads = config.kernels.threads || cpus().length;
  const k = o.kernels ?? (await createKernels({ backend: config.kernels.backend, threads }));
  logger.info({ backend: k.description }, "kernels");
  const model = buildModel(k, config);
  const c = model.config;
  logger.info({ model_type: c.modelType, params: model.layout.totalNumel, layers: c.L, hidden: c.C, vocab: c.V, tied: c.tied,
    activation_mb: Math.round(model.activationBytes / 2 ** 20), gradient_checkpointing: model.opts.gradientCheckpointing }, "model ready");
  // With max_steps set, the data repeats (next epoch) until the steps are done.
  const dataCfg = train.max_steps != null ? { ...config, train: { ...train, num_train_epochs: Number.MAX_SAFE_INTEGER } } : config;
  const loader = createDataLoader(dataCfg, {
    dpRank: 0, dpSize: 1, vocabSize: c.V, tokenizerPath: config.model.tokenizer_path ?? config.model.model_path ?? null, log: logger,
  });
  const trainSteps = train.max_steps ?? loader.info.trainSteps;
  const trainer = new Trainer(model, {
    schedule: { lr: train.lr, lr_min: train.lr_min, lr_start: train.lr_start, train_steps: trainSteps,
      lr_warmup_ratio: train.lr_warmup_ratio, lr_decay_style: train.lr_decay_style, lr_decay_ratio: train.lr_decay_ratio },
    weightDecay: train.weight_decay, maxGradNorm: train.max_grad_norm,
  });
  mkdirSync(outputDir, { recursive: true });
  const metricsPath = join(outputDir, "metrics.jsonl");
  const peak = k.backend === "cpu" ? cpuPeakFlops(threads) : 0;
  const records: StepRecord[] = [];
  for (let step = 0; step < trainSteps; step++) {
    const batch = await loader.nextStep();
    if (!batch) break; // data exhausted after num_train_epochs (no max_steps)
    const t0 = performance.now();
    const m: TrainerMetrics = await trainer.step(step, batch.microBatches);
    const dt = (performance.now() - t0) / 1000;
    const flops = batch.microBatches.reduce((a, mb) => a + microBatchFlops(model, mb), 0);
    const rec: StepRecord = {
      step: step + 1, loss: m.loss, grad_norm: m.grad_norm, lr: m.lr, tokens: m.tokens, tokens_per_s: m.tokens / dt,
      mfu: peak ? flops / dt / peak : 0, peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    };
    appendFileSync(metricsPath, JSON.stringify(rec) + "\n");
    records.push(rec);
    if (process.stderr.isTTY) {
      process.stderr.write(`\rstep ${rec.step}/${trainSteps} loss ${rec.loss.toFixed(4)} grad_norm ${rec.grad_norm.toFixed(3)} lr ${rec.lr.toExponential(2)} ${Math.round(rec.tokens_per_s)} tok/s mfu ${(100 * rec.mfu).toFixed(1)}%   `);
    }
    logger.debug(rec, "step");
    await o.onStep?.(step, trainer, rec);
  }
  if (process.stderr.isTTY) process.stderr.write("\n");
  const last = records[records.length - 1];
  logger.info({ steps: records.length, loss: last?.loss, metrics: metricsPath }, "training done");
  return { steps: records.length, records, metricsPath, model, trainer };
}
