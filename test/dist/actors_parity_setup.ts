// A very small qwen2-style model (random init from config.json) and pre-tokenized jsonl data for
// the data-parallel parity tests and the scaling benchmark: fast enough for 4 processes on 2 cores.
import { expect } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigSchema, type Config } from "../../configs/index.ts";

export const TINY_V = 96;

/** Writes config.json + data.jsonl under `dir`; returns their paths. */
export function writeTinyModelAndData(dir: string, samples = 96): { configPath: string; dataPath: string } {
  mkdirSync(dir, { recursive: true });
  const configPath = join(dir, "config.json");
  writeFileSync(configPath, JSON.stringify({
    model_type: "qwen2", vocab_size: TINY_V, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: true, rms_norm_eps: 1e-6,
  }));
  const dataPath = join(dir, "data.jsonl");
  const lines = Array.from({ length: samples }, (_, s) => JSON.stringify({ input_ids: Array.from({ length: 5 + ((s * 5) % 11) }, (_, i) => (s * 31 + i * 7 + 3) % TINY_V) }));
  writeFileSync(dataPath, lines.join("\n") + "\n");
  return { configPath, dataPath };
}

/** A training config over the tiny model: global batch 4 samples, static micro-batches of 1; f32
 *  (enable_mixed_precision false) unless `train` turns mixed precision on. */
export function tinyTrainConfig(dir: string, out: string, launch: object, train: object = {}): Config {
  const { configPath, dataPath } = writeTinyModelAndData(dir);
  return ConfigSchema.parse({
    model: { config_path: configPath },
    data: { train_path: dataPath, data_type: "plaintext", max_seq_len: 16 },
    train: {
      output_dir: out, lr: 1e-2, max_steps: 5, micro_batch_size: 1, global_batch_size: 4, dyn_bsz: false, seed: 7,
      weight_decay: 0.1, max_grad_norm: 1.0, enable_gradient_checkpointing: false, enable_mixed_precision: false, ...train,
    },
    launch: { heartbeat_s: 0.5, dead_after_s: 20, ...launch },
    kernels: { backend: "cpu", threads: 1 },
  });
}

/** |a-b| <= tol * (1 + |a|), elementwise, with the worst offender named. */
export function close(a: number[], b: number[], tol: number, what: string): void {
  expect(b.length).toBe(a.length);
  let worst = 0, at = -1;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]) / (1 + Math.abs(a[i]));
    if (e > worst) [worst, at] = [e, i];
  }
  if (worst > tol) throw new Error(`${what}: element ${at} differs: ${a[at]} vs ${b[at]} (rel ${worst.toExponential(2)} > ${tol})`);
}
