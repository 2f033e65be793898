// Per-step metrics: the coordinator merges the ranks' reports into one line of
// output_dir/metrics.jsonl (what a person sees of them: run_view.ts).
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { StepMetrics } from "./protocol.ts";

export interface MetricsLine {
  /** 1-based count of finished optimizer steps. */
  step: number;
  /** the job's generation that ran the step (written by MetricsSink): a step redone after a restart has a higher one. */
  epoch?: number;
  /** the objective (VeOmni logs HF's outputs.loss): global token-mean next-token CE, plus
   *  router_aux_loss_coef * aux_loss for MoE models with output_router_logits. */
  loss: number;
  /** MoE: the CE term of `loss` (the plain token-mean next-token cross-entropy). */
  lm_loss?: number;
  /** MoE: HF's load-balancing loss, weighted over micro-batches by their valid tokens (unscaled). */
  aux_loss?: number;
  /** MoE: tokens routed to each expert, per sparse layer ([layer][expert]), all ranks. */
  expert_load?: number[][];
  /** MoE: per sparse layer, least / most loaded expert's tokens (1 = balanced, 0 = an idle expert). */
  expert_load_min_max?: number[];
  grad_norm: number;
  lr: number;
  /** tokens processed by all ranks in the step. */
  tokens: number;
  valid_tokens: number;
  tokens_per_s: number;
  /** model FLOPs utilisation against the ranks' backend peak; null if the backend has none. */
  mfu: number | null;
  /** max over ranks. */
  peak_rss_mb: number;
  /** each rank's peak resident set so far (ru_maxrss), MB, in rank order. */
  peak_rss_mb_ranks: number[];
  /** max over ranks of the resident set at the step's end, when reported. */
  rss_mb?: number;
  /** max over ranks of the model state held (params, grads, optimizer, FSDP slots), when reported. */
  state_mb?: number;
  step_time_s: number;
  /** last step: per unit [sum, sum of squares, index-weighted sum] of the whole model's params. */
  param_stats?: number[];
}

/** Merge one step's reports (one per rank, in rank order). `wallS`: coordinator-measured step time. */
export function mergeStep(step: number, reports: StepMetrics[], wallS: number): MetricsLine {
  let lossSum = 0;
  let valid = 0;
  let tokens = 0;
  let flops = 0;
  let peak = 0;
  let rss = 0;
  for (const r of reports) {
    lossSum += r.lossSum;
    valid += r.validTokens;
    tokens += r.tokens;
    flops += r.flops;
    peak += r.peakFlops;
    rss = Math.max(rss, r.peakRssMb);
  }
  // Every rank reports the same post-reduction grad norm and lr; take rank 0's.
  const r0 = reports[0];
  let paramStats: number[] | undefined;
  const maxOf = (f: (r: StepMetrics) => number | undefined) => {
    const v = reports.map(f).filter((x): x is number => x !== undefined);
    return v.length ? Math.round(Math.max(...v) * 10) / 10 : undefined;
  };
  const rssMb = maxOf((r) => r.rssMb);
  const stateMb = maxOf((r) => r.stateMb);
  for (const r of reports) {
    if (!r.paramStats) continue;
    paramStats ??= new Array(r.paramStats.length).fill(0);
    r.paramStats.forEach((v, i) => (paramStats![i] += v));
  }
  const line: MetricsLine = {
    step: step + 1,
    loss: valid > 0 ? lossSum / valid : NaN,
    grad_norm: r0.gradNorm,
    lr: r0.lr,
    tokens,
    valid_tokens: valid,
    tokens_per_s: wallS > 0 ? tokens / wallS : 0,
    mfu: peak > 0 && wallS > 0 ? flops / wallS / peak : null,
    peak_rss_mb: Math.round(rss * 10) / 10,
    peak_rss_mb_ranks: reports.map((r) => Math.round(r.peakRssMb * 10) / 10),
    step_time_s: wallS,
  };
  if (rssMb !== undefined) line.rss_mb = rssMb;
  if (stateMb !== undefined) line.state_mb = stateMb;
  if (paramStats) line.param_stats = paramStats;
  if (reports.every((r) => r.moe)) mergeMoe(line, reports.map((r) => r.moe!));
  return line;
}

/** MoE figures: aux loss summed over ranks, loss = lm_loss + coef * aux, expert load summed. */
function mergeMoe(line: MetricsLine, moe: NonNullable<StepMetrics["moe"]>[]): void {
  const load = moe[0].expertLoad.map((l, i) => l.map((_, e) => moe.reduce((a, m) => a + m.expertLoad[i][e], 0)));
  line.lm_loss = line.loss;
  if (moe.every((m) => m.auxSum !== null)) {
    const aux = moe.reduce((a, m) => a + m.auxSum!, 0);
    line.aux_loss = aux;
    line.loss = line.loss + moe[0].auxCoef * aux;
  }
  line.expert_load = load;
  line.expert_load_min_max = load.map((l) => (Math.max(...l) > 0 ? Math.min(...l) / Math.max(...l) : 1));
}

/**
 * output_dir/metrics.jsonl: one line per step, in step order, whatever restarts happened. A run
 * (or a restart) that starts after `startStep` steps first drops the file's lines of later steps:
 * a resume continues the file, and steps redone after a restart replace the abandoned lines (each
 * line carries the job's `epoch`, so a redone step shows by a higher one). The rewrite is atomic.
 */
export class MetricsSink {
  private readonly file: string | null;
  constructor(outputDir: string | null, private readonly at: { startStep: number; epoch: number } = { startStep: 0, epoch: 1 }) {
    this.file = outputDir ? join(outputDir, "metrics.jsonl") : null;
    if (outputDir) mkdirSync(outputDir, { recursive: true });
    if (this.file && existsSync(this.file)) keepThrough(this.file, at.startStep);
  }

  write(m: MetricsLine): void {
    if (this.file) appendFileSync(this.file, JSON.stringify({ ...m, epoch: this.at.epoch }) + "\n");
  }
}

/** Keep only the lines of steps <= `step` (a torn last line from a crash goes too). */
function keepThrough(file: string, step: number): void {
  const lines = readFileSync(file, "utf8").split("\n").filter(Boolean);
  const kept = lines.filter((l) => {
    try {
      return (JSON.parse(l) as { step: number }).step <= step;
    } catch {
      return false; // a line cut short by a kill
    }
  });
  if (kept.length === lines.length) return;
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, kept.map((l) => l + "\n").join(""));
  renameSync(tmp, file);
}
