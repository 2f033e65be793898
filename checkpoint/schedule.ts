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
