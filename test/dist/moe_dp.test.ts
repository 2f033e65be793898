// A MoE model (qwen3_moe-tiny's config.json, random init) trained by the coordinator's worker
// processes: world size 1 vs 2 ranks under FSDP give the same objective, lm_loss, aux_loss,
// expert load, grad norms and parameters after 5 steps; metrics.jsonl carries the MoE figures.
// Real worker processes and TCP rings, as actors_parity.test.ts.
import { beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import { ConfigSchema } from "../../configs/index.ts";
import { mergeToHf, parseSize } from "../../checkpoint/index.ts";
import { SafetensorsFolder } from "../../checkpoint/safetensors.ts";
import { createKernels } from "../../kernels/index.ts";
import { loadPretrained } from "../../models/index.ts";
import { singleRow } from "../models/fixtures.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { close, writeTinyModelAndData } from "./actors_parity_setup.ts";

const dir = tempDir("moe-dp");
const MODEL = join(new URL("../fixtures/", import.meta.url).pathname, "qwen3_moe-tiny/config.json");

async function run(world: number, train: object = {}, out = tempDir(`moe-dp-w${world}`)): Promise<MetricsLine[]> {
  const { logger, file } = fileLogger(out);
  const { dataPath } = writeTinyModelAndData(dir);
  const config = ConfigSchema.parse({
    model: { config_path: MODEL },
    data: { train_path: dataPath, data_type: "plaintext", max_seq_len: 16 },
    train: { output_dir: out, lr: 1e-2, max_steps: 5, micro_batch_size: 1, global_batch_size: 4, dyn_bsz: false, seed: 7,
      enable_mixed_precision: false, // f32: the plan vs one process, to f32 tolerance (docs/mixed_precision.md)
      weight_decay: 0.1, max_grad_norm: 1.0, ...train },
    launch: { heartbeat_s: 0.5, dead_after_s: 20, world_size: world },
    kernels: { backend: "cpu", threads: 1 },
  });
  const code = await runJob(config, logger);
  if (code !== 0) throw new Error(`moe world ${world}: exit ${code}; see ${file}`);
  return readMetrics(out) as unknown as MetricsLine[];
}

let ref: MetricsLine[];
beforeAll(async () => {
  ref = await run(1);
}, 60_000);

test("metrics.jsonl: loss = lm_loss + router_aux_loss_coef * aux_loss, expert load per sparse layer", () => {
  expect(ref.length).toBe(5);
  for (const m of ref) {
    expect(Math.abs(m.loss - (m.lm_loss! + 0.02 * m.aux_loss!))).toBeLessThan(1e-6);
    expect(m.aux_loss!).toBeGreaterThan(0); // E * sum_e f_e P_e; K (= 2) when perfectly balanced
    expect(m.expert_load!.length).toBe(2); // layers 1 and 2 (layer 0 is in mlp_only_layers)
    for (const l of m.expert_load!) expect(l.reduce((a, b) => a + b, 0)).toBe(2 * m.tokens); // top-2 of every token
    expect(m.expert_load_min_max!).toEqual(m.expert_load!.map((l) => Math.min(...l) / Math.max(...l)));
  }
});

test("fsdp2, 2 ranks = 1 rank: objective, lm_loss, aux_loss, expert load, grad norms, parameters; merge writes the Hub's per-expert names", async () => {
  const out = tempDir("moe-dp-w2");
  const got = await run(2, { data_parallel_mode: "fsdp2", save_steps: 5 }, out);
  expect(got.map((m) => m.tokens)).toEqual(ref.map((m) => m.tokens));
  close(ref.map((m) => m.loss), got.map((m) => m.loss), 1e-5, "losses");
  close(ref.map((m) => m.lm_loss!), got.map((m) => m.lm_loss!), 1e-5, "lm losses");
  close(ref.map((m) => m.aux_loss!), got.map((m) => m.aux_loss!), 1e-5, "aux losses");
  expect(got.map((m) => m.expert_load)).toEqual(ref.map((m) => m.expert_load));
  close(ref.map((m) => m.grad_norm), got.map((m) => m.grad_norm), 1e-4, "grad norms");
  close(ref.at(-1)!.param_stats!, got.at(-1)!.param_stats!, 1e-4, "parameter stats after 5 steps");
  expect(childPids()).toEqual([]);
  // the sharded checkpoint merges into a folder the Hub's loaders read: same names and shapes as
  // the torch-made checkpoint of this config, holding the trained values, and it loads back
  const ckpt = join(out, "checkpoints", "global_step_5");
  const save = join(out, "hf");
  mergeToHf({ loadDir: ckpt, modelAssetsDir: join(out, "model_assets"), saveDir: save, shardBytes: parseSize("2GB"), dtype: "F32" });
  const hub = new SafetensorsFolder(join(MODEL, ".."));
  const merged = new SafetensorsFolder(save);
  expect(merged.names().sort()).toEqual(hub.names().sort());
  expect(merged.names()).toContain("model.layers.2.mlp.experts.3.down_proj.weight");
  for (const n of hub.names()) expect([n, merged.info(n)!.shape]).toEqual([n, hub.info(n)!.shape]);
  let sumSq = 0; // the trained values: sum of squares of every merged tensor = the run's param_stats
  for (const n of merged.names()) for (const x of merged.readF32(n)) sumSq += x * x;
  const stats = got.at(-1)!.param_stats!;
  close([stats.reduce((a, v, i) => a + (i % 3 === 1 ? v : 0), 0)], [sumSq], 1e-5, "sum of squares of the merged parameters");
  hub.close();
  merged.close();
  const k = await createKernels({ backend: "cpu", threads: 1 });
  const model = loadPretrained(k, save, { maxTokens: 16, gradientCheckpointing: false });
  const logits = await model.logits(singleRow([5, 9, 13, 2]));
  expect(logits.every(Number.isFinite)).toBe(true);
}, 60_000);
