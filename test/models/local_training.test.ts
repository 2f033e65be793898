// Single-process training end to end: a YAML-free config (CLI overrides through
// loadConfig), pre-tokenized jsonl rows through the data loader, random init from a
// config.json, gradient accumulation, data repeating into the next epoch, metrics.jsonl.
import { expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import pino from "pino";
import { loadConfig } from "../../configs/index.ts";
import { runLocalTraining } from "../../actors/local.ts";
import { FIXTURES } from "./fixtures.ts";
import { tempDir } from "../harness/tmp.ts";

test("runLocalTraining: 8 steps of 2 micro-batches, loss falls, one metrics line per step", async () => {
  const dir = tempDir("local");
  // 12 rows of a repeating pattern: learnable, so the loss must fall; 12 rows < 8 steps x 4 samples
  const rows = Array.from({ length: 12 }, (_, r) => JSON.stringify({ input_ids: Array.from({ length: 12 }, (_, i) => 3 + ((r + i) % 7)) }));
  writeFileSync(`${dir}/data.jsonl`, rows.join("\n") + "\n");
  const { config } = loadConfig([
    "--model.config_path", `${FIXTURES}qwen2-tiny/config.json`, "--data.train_path", `${dir}/data.jsonl`,
    "--data.data_type", "plaintext", "--data.max_seq_len", "32", "--train.output_dir", `${dir}/out`,
    "--train.micro_batch_size", "2", "--train.global_batch_size", "4", "--train.max_steps", "8", "--train.lr", "0.01",
    "--train.enable_gradient_checkpointing", "true", "--train.use_wandb", "false", "--kernels.backend", "cpu", "--kernels.threads", "1",
  ]);
  const res = await runLocalTraining(config, pino({ level: "silent" }));
  expect(res.steps).toBe(8);
  const lines = readFileSync(res.metricsPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  expect(lines.length).toBe(8);
  for (const [i, l] of lines.entries()) {
    expect(Object.keys(l)).toEqual(["step", "loss", "grad_norm", "lr", "tokens", "tokens_per_s", "mfu", "peak_rss_mb"]);
    expect(l.step).toBe(i + 1);
    expect(l.tokens).toBeGreaterThan(0);
    expect(l.tokens_per_s).toBeGreaterThan(0);
    expect(Number.isFinite(l.grad_norm)).toBe(true);
  }
  expect(lines[7].loss).toBeLessThan(lines[0].loss - 0.5);
});
