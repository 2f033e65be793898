// Cross-field checks: what no single field's type can say. Each message names every field
// involved with its value, e.g. "train.global_batch_size(10) is not divisible by ...".
import type { Config } from "./schema.ts";

export type Command = "train" | "infer" | "data";

/** The data-parallel size implied by the parallel sizes and the world size. */
export function dataParallelSize(c: Config): number {
  const t = c.train;
  const inner = t.tensor_parallel_size * t.ulysses_parallel_size * t.pipeline_parallel_size * t.context_parallel_size;
  return Math.floor(c.launch.world_size / inner);
}

export function crossFieldErrors(c: Config, command: Command): string[] {
  const out: string[] = [];
  const t = c.train;
  const need = (ok: boolean, key: string, why: string) => ok || out.push(`missing required field ${key} (${why})`);

  if (command === "train" || command === "data") {
    need(c.data.train_path !== null, "data.train_path", "a file, folder or comma-separated list of jsonl/parquet/txt");
  }
  if (command === "train") {
    need(t.output_dir !== null, "train.output_dir", "where logs, metrics and checkpoints go");
    need(
      c.model.model_path !== null || c.model.config_path !== null,
      "model.model_path or model.config_path",
      "a Hugging Face model folder, or a config.json for random initialisation",
    );
  }
  if (command === "infer") need(c.infer.model_path !== null, "infer.model_path", "a Hugging Face model folder");

  const factors: Array<[string, number]> = [
    ["train.pipeline_parallel_size", t.pipeline_parallel_size],
    ["train.tensor_parallel_size", t.tensor_parallel_size],
    ["train.ulysses_parallel_size", t.ulysses_parallel_size],
    ["train.context_parallel_size", t.context_parallel_size],
  ];
  const inner = factors.reduce((p, [, v]) => p * v, 1);
  const ws = c.launch.world_size;
  if (ws % inner !== 0) {
    out.push(`${factors.map(([k, v]) => `${k}(${v})`).join(" * ")} = ${inner} does not divide launch.world_size(${ws})`);
  } else {
    const dp = ws / inner;
    if (dp % t.data_parallel_replicate_size !== 0)
      out.push(`train.data_parallel_replicate_size(${t.data_parallel_replicate_size}) does not divide the data-parallel size ${dp} (launch.world_size(${ws}) / ${inner})`);
    if (t.global_batch_size !== null && t.global_batch_size % (t.micro_batch_size * dp) !== 0)
      out.push(
        `train.global_batch_size(${t.global_batch_size}) is not divisible by train.micro_batch_size(${t.micro_batch_size}) * data-parallel size(${dp})`,
      );
  }
  if (ws % t.expert_parallel_size !== 0)
    out.push(`train.expert_parallel_size(${t.expert_parallel_size}) does not divide launch.world_size(${ws})`);
  if (t.lr_min > t.lr) out.push(`train.lr_min(${t.lr_min}) is above train.lr(${t.lr})`);
  if (t.profile_end_step < t.profile_start_step)
    out.push(`train.profile_end_step(${t.profile_end_step}) is before train.profile_start_step(${t.profile_start_step})`);
  const [p0, p1] = c.launch.port_range;
  if (p0 > p1) out.push(`launch.port_range [${p0}, ${p1}]: the first port is above the last`);
  if (c.launch.coordinator_grace_s < c.launch.dead_after_s)
    out.push(`launch.coordinator_grace_s(${c.launch.coordinator_grace_s}) is below launch.dead_after_s(${c.launch.dead_after_s}): a --resume can only take over a job silent for dead_after_s, so workers must wait at least that long`);
  if (c.launch.local_workers !== null && c.launch.local_workers > ws)
    out.push(`launch.local_workers(${c.launch.local_workers}) is above launch.world_size(${ws})`);
  return out;
}
