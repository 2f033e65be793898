// When to save: VeOmni's train.save_steps (every N optimizer steps, 0 = never) and
// train.save_epochs (every N data epochs, 0 = never), and where.
import { join } from "node:path";
import { stepDirName } from "./format.ts";

/** output_dir/checkpoints/global_step_N */
export function checkpointDir(outputDir: string, step: number): string {
  return join(outputDir, "checkpoints", stepDirName(step));
}

/** Is a checkpoint due after finishing `step` optimizer steps (1-based count)?
 *  `epochEnded`: this step finished a pass over the data (epoch number `epoch`, 1-based). */
export function isSaveStep(
  o: { save_steps: number; save_epochs: number }, step: number, epochEnded = false, epoch = 0,
): boolean {
  if (o.save_steps > 0 && step % o.save_steps === 0) return true;
  return epochEnded && o.save_epochs > 0 && epoch % o.save_epochs === 0;
}

/**
 * The data epoch (1-based) that ends with optimizer step `step` of a multi-rank job, or 0. The
 * job's `total` steps cover num_train_epochs epochs evenly (VeOmni's train_steps =
 * steps_per_epoch x num_train_epochs), epoch k ending at step ceil(k * total / epochs), so the
 * last step always ends the last epoch. 0 with train.max_steps (no epochs are counted then).
 */
export function epochEndingAt(step: number, total: number, t: { num_train_epochs: number; max_steps?: number | null }): number {
  if (t.max_steps != null || !(t.num_train_epochs >= 1) || step < 1 || step > total) return 0;
  const k = epochsDone(step, total, t.num_train_epochs);
  return k > epochsDone(step - 1, total, t.num_train_epochs) ? k : 0;
}

/** Epochs completed after `step` of `total` steps spread evenly over `epochs`. */
function epochsDone(step: number, total: number, epochs: number): number {
  return Math.floor((step * epochs) / total);
}

/**
 * isSaveStep for step `step` of `total`: save_steps, or a multiple of save_epochs among the
 * epochs that end with this step (one step may end several when there are fewer steps than epochs).
 */
export function isSaveStepOf(o: { save_steps: number; save_epochs: number; num_train_epochs: number; max_steps?: number | null }, step: number, total: number): boolean {
  if (isSaveStep(o, step)) return true;
  const k = epochEndingAt(step, total, o);
  if (k === 0 || o.save_epochs <= 0) return false;
  const before = epochsDone(step - 1, total, o.num_train_epochs);
  return Math.floor(k / o.save_epochs) > Math.floor(before / o.save_epochs);
}
