// What the person who started a run sees of it, on the coordinator: a progress line (step/total,
// elapsed, ETA, loss, lr, grad norm, tok/s, MFU, memory) redrawn in place on a terminal, or one
// plain line every N steps when stderr is not a terminal; the scalars in TensorBoard event
// files (output_dir/tensorboard/); the curves as PNGs (output_dir/plots/) at every checkpoint and
// at the end; and an end-of-run summary with the commands that come next.
import { isAbsolute, join, relative, resolve, sep } from "node:path";
import type { Logger } from "pino";
import type { Config } from "../configs/index.ts";
import type { MetricsLine } from "./metrics.ts";
import { TensorBoardWriter } from "./tensorboard.ts";
import { readRun, writePlots } from "./plots.ts";

/** h:mm:ss (or m:ss under an hour). */
export function clock(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  const t = Math.round(s);
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return `${h > 0 ? `${h}:` : ""}${mm}:${String(sec).padStart(2, "0")}`;
}

/** One progress line. `elapsedS`: since this run's first step; `done`: steps this run finished. */
export function progressLine(m: MetricsLine, total: number, elapsedS: number, done: number): string {
  const left = total - m.step;
  const eta = done > 0 ? (elapsedS / done) * left : NaN;
  const pct = total > 0 ? ` ${((100 * m.step) / total).toFixed(0)}%` : "";
  const mfu = m.mfu === null ? "" : `  mfu ${(m.mfu * 100).toFixed(1)}%`;
  const mem = m.rss_mb ?? m.peak_rss_mb;
  return `step ${m.step}/${total}${pct}  ${clock(elapsedS)} elapsed, eta ${clock(eta)}  loss ${m.loss.toFixed(4)}  lr ${m.lr.toExponential(2)}  gnorm ${m.grad_norm.toFixed(3)}  ${Math.round(m.tokens_per_s)} tok/s${mfu}  mem ${Math.round(mem)} MB`;
}

/** A path as the summary shows it: relative to the working folder when inside it, else absolute
 *  (never a chain of ../ up to the root). */
export function shownPath(p: string, cwd = process.cwd()): string {
  const r = relative(cwd, resolve(cwd, p));
  return r === "" ? "." : r === ".." || r.startsWith(`..${sep}`) || isAbsolute(r) ? resolve(cwd, p) : r;
}

export interface RunViewOptions {
  /** "tty": one line redrawn in place; "lines": a plain line every N steps; "off": none. */
  progress: "tty" | "lines" | "off";
  /** where the progress goes (default stderr). */
  write?: (s: string) => void;
}

export class RunView {
  private t0 = 0;
  private done = 0;
  private last: MetricsLine | null = null;
  private tokens = 0;
  private tb: TensorBoardWriter | null;
  private every: number;
  private write: (s: string) => void;
  private plotting: Promise<unknown> = Promise.resolve();

  constructor(private config: Config, private total: number, private startStep: number, private log: Logger, private o: RunViewOptions) {
    const out = config.train.output_dir;
    this.tb = out ? new TensorBoardWriter(join(out, "tensorboard")) : null;
    // about 20 plain lines per run, never fewer than one per 100 steps
    this.every = Math.max(1, Math.min(100, Math.round((total - startStep) / 20)));
    this.write = o.write ?? ((s) => process.stderr.write(s));
  }

  step(m: MetricsLine): void {
    if (this.done === 0) this.t0 = performance.now() - m.step_time_s * 1000;
    this.done++;
    this.tokens += m.tokens;
    this.last = m;
    const line = progressLine(m, this.total, (performance.now() - this.t0) / 1000, this.done);
    if (this.o.progress === "tty") this.write(`\r${line}\x1b[K`);
    else if (this.o.progress === "lines" && (this.done === 1 || m.step % this.every === 0 || m.step === this.total)) this.write(line + "\n");
    this.tb?.scalars(m.step, {
      "train/loss": m.loss, "train/lr": m.lr, "train/grad_norm": m.grad_norm, "train/tokens_per_s": m.tokens_per_s,
      "train/mfu": m.mfu, "train/step_time_s": m.step_time_s, "train/peak_rss_mb": m.peak_rss_mb,
    });
  }

  /** Closes the event file (also when the run fails). */
  close(): void {
    this.tb?.close();
    this.tb = null;
  }

  /** Redraws output_dir/plots/*.png from metrics.jsonl (one at a time; a failure is logged, never fatal). */
  plot(): Promise<unknown> {
    const out = this.config.train.output_dir;
    if (!out) return Promise.resolve();
    this.plotting = this.plotting.then(() =>
      writePlots([readRun(out)], join(out, "plots")).catch((e) => this.log.warn({ err: (e as Error).message }, "could not draw the plots")),
    );
    return this.plotting;
  }

  /** End of a run that finished: the plots, then a summary with the next commands on stdout. */
  async end(o: { plots: boolean; summary: boolean; lastCheckpoint: string | null; checkpoints: number; hfDir: string | null }): Promise<void> {
    if (this.o.progress === "tty" && this.done > 0) this.write("\n");
    this.close();
    if (o.plots) await this.plot();
    const out = this.config.train.output_dir;
    if (!o.summary || !out || !this.last) return;
    const rel = (p: string) => shownPath(p);
    const elapsed = (performance.now() - this.t0) / 1000;
    const lines = [
      `done: ${this.last.step}/${this.total} steps in ${clock(elapsed)}, final loss ${this.last.loss.toFixed(4)}, ${this.tokens} tokens (${Math.round(this.tokens / elapsed)} tok/s)`,
      `  metrics    ${rel(join(out, "metrics.jsonl"))}, plots ${rel(join(out, "plots"))}/, TensorBoard: tensorboard --logdir ${rel(join(out, "tensorboard"))}`,
      `  checkpoints written: ${o.checkpoints}${o.lastCheckpoint ? `, last ${rel(join(out, o.lastCheckpoint))}` : " (set train.save_steps N to save during training)"}`,
    ];
    const yaml = rel(join(out, "veomni_cli.yaml"));
    if (o.lastCheckpoint) {
      const ck = rel(join(out, o.lastCheckpoint));
      const hf = o.hfDir ? rel(o.hfDir) : `${ck}/hf_ckpt`;
      lines.push(`next:`);
      lines.push(`  resume     bun run coordinator --config ${yaml} --train.load_checkpoint_path auto --train.max_steps ${this.total + Math.max(1, this.total - this.startStep)}`);
      if (!o.hfDir) lines.push(`  merge      bun run merge --load-dir ${ck} --model_assets_dir ${rel(join(out, "model_assets"))} --save-dir ${hf}`);
      lines.push(`  infer      bun run infer --infer.model_path ${hf} --infer.prompt "Call me"`);
    }
    process.stdout.write(lines.join("\n") + "\n");
  }
}
