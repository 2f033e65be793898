// The chaos soak's job: a tiny Qwen2-shaped model (random init from config.json), pre-tokenized
// jsonl data with enough samples for every step, FSDP over `ranks` external workers, a checkpoint
// every `saveSteps` steps and the Hugging Face export at the end (what the runs are compared by).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigSchema, type Config } from "../../configs/index.ts";

const VOCAB = 128;

/** Writes config.json and data.jsonl under `dir` (once per soak: both runs read the same files). */
export function writeChaosModel(dir: string, samples: number): { configPath: string; dataPath: string } {
  mkdirSync(dir, { recursive: true });
  const configPath = join(dir, "config.json");
  writeFileSync(configPath, JSON.stringify({
    model_type: "qwen2", vocab_size: VOCAB, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: true, rms_norm_eps: 1e-6,
  }));
  const dataPath = join(dir, "data.jsonl");
  const lines = Array.from({ length: samples }, (_, s) => JSON.stringify({ input_ids: Array.from({ length: 6 + ((s * 7) % 11) }, (_, i) => (s * 37 + i * 11 + 5) % VOCAB) }));
  writeFileSync(dataPath, lines.join("\n") + "\n");
  return { configPath, dataPath };
}

export interface ChaosJob {
  model: { configPath: string; dataPath: string };
  out: string;
  jobId: string;
  ranks: number;
  steps: number;
  saveSteps: number;
  natsUrl: string;
  natsToken: string;
  maxRestarts: number;
  /** launch.dead_after_s (a rank or the coordinator silent this long is dead) */
  deadAfterS?: number;
}

export function chaosConfig(j: ChaosJob): Config {
  return ConfigSchema.parse({
    model: { config_path: j.model.configPath },
    data: { train_path: j.model.dataPath, data_type: "plaintext", max_seq_len: 16 },
    train: {
      output_dir: j.out, lr: 1e-2, max_steps: j.steps, micro_batch_size: 1, global_batch_size: j.ranks, dyn_bsz: false, seed: 11,
      weight_decay: 0.1, max_grad_norm: 1.0, data_parallel_mode: "fsdp2", save_steps: j.saveSteps, save_hf_weights: true,
      enable_gradient_checkpointing: false, enable_mixed_precision: false, use_wandb: false,
    },
    launch: {
      world_size: j.ranks, local_workers: 0, nats: j.natsUrl, nats_token: j.natsToken, job_id: j.jobId, max_restarts: j.maxRestarts,
      heartbeat_s: 0.5, dead_after_s: j.deadAfterS ?? 20, coordinator_grace_s: 120, collective_timeout_s: 30,
    },
    kernels: { backend: "cpu", threads: 1 },
  });
}
