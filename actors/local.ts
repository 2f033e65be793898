// Single-process training (world size 1): buildTraining (actors/build.ts, as every worker) ->
// Trainer steps until train.max_steps, one JSON line per step in output_dir/metrics.jsonl and a progress
// line on a terminal. In-process: tests and tools call it; `bun run coordinator` runs every job, world
// size 1 included, as worker processes that run the same Trainer (actors/train_runner.ts).
import { appendFileSync, mkdirSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import type { Config, Logger } from "../configs/index.ts";
import type { Kernels } from "../kernels/index.ts";
import type { DecoderLM } from "../models/index.ts";
import { buildTraining, microBatchFlops, type TrainingSetup } from "./build.ts";
import type { Trainer, TrainerMetrics } from "./trainer.ts";

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
  /** MoE models: as metrics.ts's MetricsLine. */
  lm_loss?: number;
  aux_loss?: number;
  expert_load?: number[][];
  expert_load_min_max?: number[];
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

export async function runLocalTraining(config: Config, logger: Logger, o: LocalRunOptions = {}): Promise<LocalRunResult> {
  const outputDir = config.train.output_dir;
  if (!outputDir) throw new Error("train.output_dir is required");
  const setup = await buildTraining(config, { rank: 0, world: 1, comm: null, logger, kernels: o.kernels, threads: cpus().length });
  try {
    return await trainLoop(outputDir, logger, o, setup);
  } finally {
    await setup.loader.close(); // the dataloader thread
  }
}

async function trainLoop(outputDir: string, logger: Logger, o: LocalRunOptions, s: TrainingSetup): Promise<LocalRunResult> {
  const { model, plan, loader, trainer, totalSteps: trainSteps, peakFlops: peak } = s;
  mkdirSync(outputDir, { recursive: true });
  const metricsPath = join(outputDir, "metrics.jsonl");
  const records: StepRecord[] = [];
  for (let step = 0; step < trainSteps; step++) {
    const batch = await loader.nextStep();
    if (!batch) break; // data exhausted after num_train_epochs (no max_steps)
    const t0 = performance.now();
    const mbs = plan.prepare(batch.microBatches);
    plan.beginStep(mbs.length);
    const m: TrainerMetrics = await trainer.step(step, mbs);
    const dt = (performance.now() - t0) / 1000;
    const flops = mbs.reduce((a, mb) => a + microBatchFlops(model, mb), 0);
    const rec: StepRecord = {
      step: step + 1, loss: m.loss, grad_norm: m.grad_norm, lr: m.lr, tokens: m.tokens, tokens_per_s: m.tokens / dt,
      mfu: peak ? flops / dt / peak : 0, peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    };
    if (m.moe && m.local.expertLoad) {
      const load = m.local.expertLoad;
      Object.assign(rec, { lm_loss: m.moe.lm_loss, ...(m.moe.aux_loss !== null ? { aux_loss: m.moe.aux_loss } : {}), expert_load: load,
        expert_load_min_max: load.map((l) => (Math.max(...l) > 0 ? Math.min(...l) / Math.max(...l) : 1)) });
    }
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
