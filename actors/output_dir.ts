// A run's output folder: a fresh run never mixes with an earlier one. A folder holding an earlier
// run's results (metrics.jsonl with lines, committed or partial checkpoints) is refused unless the
// run resumes it (train.load_checkpoint_path) or starts it over (train.overwrite_output_dir, which
// removes those results first). Decided before anything starts.
import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import type { Config } from "../configs/index.ts";
import { parseStepDir } from "../checkpoint/index.ts";

/** What in `dir` an earlier run left: "metrics.jsonl", "checkpoints/global_step_N", ... */
export function earlierRun(dir: string): string[] {
  const found: string[] = [];
  const metrics = join(dir, "metrics.jsonl");
  if (existsSync(metrics) && statSync(metrics).size > 0) found.push("metrics.jsonl");
  const ck = join(dir, "checkpoints");
  if (existsSync(ck)) {
    const steps = readdirSync(ck).filter((n) => parseStepDir(n) !== null).sort((a, b) => parseStepDir(a)! - parseStepDir(b)!);
    found.push(...steps.map((n) => `checkpoints/${n}`));
  }
  return found;
}

export function prepareOutputDir(config: Config, log: Logger): void {
  const dir = config.train.output_dir;
  if (!dir || !existsSync(dir)) return;
  const found = earlierRun(dir);
  if (found.length === 0 || config.train.load_checkpoint_path) return; // empty, or resumed: metrics continue
  if (config.train.overwrite_output_dir) {
    log.warn({ dir, removed: found }, `train.overwrite_output_dir: removing the earlier run's ${found.join(", ")}`);
    rmSync(join(dir, "metrics.jsonl"), { force: true });
    rmSync(join(dir, "checkpoints"), { recursive: true, force: true });
    return;
  }
  const list = found.length > 4 ? `${found.slice(0, 4).join(", ")} and ${found.length - 4} more` : found.join(", ");
  throw new Error(
    `train.output_dir ${dir} holds an earlier run (${list}); resume it with --train.load_checkpoint_path auto, start over with --train.overwrite_output_dir true, or choose another folder`,
  );
}
