// Expert parallelism (train.expert_parallel_size) trained by the coordinator's worker processes
// over real TCP rings, against one process on the same data and seed: ep 2 on 2 ranks, and ep 2 x
// ep_fsdp 2 on 4 ranks (dense parameters FSDP over 4, experts over ep_fsdp 2) give the same
// objective, lm_loss, aux_loss (qwen3_moe-tiny's config, aux loss on), expert load, grad norms and
// parameters after 5 steps, and so do HSDP 2 replicas x ep 2 on 4 ranks; the ep 2 checkpoint merges into the Hub's per-expert names and resumes
// at ep 1, and a one-process checkpoint resumes at ep 2. A DeepSeek-V3 whose layer-1 router bias never picks experts 4-7 (rank 1's under ep 2)
// shows a rank that receives no rows still joins every all-to-all, and its experts get no gradient.
import { beforeAll, expect, test } from "bun:test";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import { ConfigSchema } from "../../configs/index.ts";
import { mergeToHf, parseSize } from "../../checkpoint/index.ts";
import { SafetensorsFolder, writeHfWeights } from "../../checkpoint/safetensors.ts";
import { createKernels } from "../../kernels/index.ts";
import { exportTensors, initModelFromConfig } from "../../models/index.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { close, writeTinyModelAndData } from "./actors_parity_setup.ts";

const dir = tempDir("moe-ep");
const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const QWEN3_MOE = join(FIXTURES, "qwen3_moe-tiny/config.json");
const skewedDir = join(dir, "deepseek_v3-skewed");

/** deepseek_v3-tiny (8 experts in 4 groups, top-2 of the best 2 groups; layers 1 and 2 sparse),
 *  seeded init, with layer 1's e_score_correction_bias +1 for experts 0-3 and -1 for 4-7: the
 *  bias steers the choice only (sigmoid scores lie in (0, 1)) and gets no gradient, so layer 1
 *  routes every token to experts 0-3, whatever the inputs and however training moves the weights.
 *  Under ep 2 rank 1 holds experts 4-7: it receives no rows at all in layer 1. */
async function writeSkewedDeepseek(): Promise<void> {
  mkdirSync(skewedDir, { recursive: true });
  const cfg = join(FIXTURES, "deepseek_v3-tiny/config.json");
  copyFileSync(cfg, join(skewedDir, "config.json"));
  const k = await createKernels({ backend: "cpu", threads: 1 });
  const model = initModelFromConfig(k, cfg, 11, { maxTokens: 16, gradientCheckpointing: false });
  model.param("model.layers.1.mlp.gate.e_score_correction_bias").host!.set([1, 1, 1, 1, -1, -1, -1, -1]);
  writeHfWeights(skewedDir, await exportTensors(model));
}

async function run(world: number, train: object = {}, out = tempDir(`moe-ep-w${world}`), model: object = { config_path: QWEN3_MOE }): Promise<MetricsLine[]> {
  const { logger, file } = fileLogger(out);
  const { dataPath } = writeTinyModelAndData(dir);
  const config = ConfigSchema.parse({
    model,
    data: { train_path: dataPath, data_type: "plaintext", max_seq_len: 16 },
    train: { output_dir: out, lr: 1e-2, max_steps: 5, micro_batch_size: 1, global_batch_size: 4, dyn_bsz: false, seed: 7,
      enable_mixed_precision: false, // f32: the plan vs one process, to f32 tolerance (docs/mixed_precision.md)
      weight_decay: 0.1, max_grad_norm: 1.0, data_parallel_mode: "fsdp2", ...train },
    launch: { heartbeat_s: 0.5, dead_after_s: 30, world_size: world },
    kernels: { backend: "cpu", threads: 1 },
  });
  const code = await runJob(config, logger);
  if (code !== 0) throw new Error(`moe world ${world}: exit ${code}; see ${file}`);
  return readMetrics(out) as unknown as MetricsLine[];
}

function expectSameRun(ref: MetricsLine[], got: MetricsLine[]): void {
  expect(got.map((m) => m.tokens)).toEqual(ref.map((m) => m.tokens));
  close(ref.map((m) => m.loss), got.map((m) => m.loss), 1e-5, "losses");
  close(ref.map((m) => m.lm_loss!), got.map((m) => m.lm_loss!), 1e-5, "lm losses");
  if (ref[0].aux_loss !== null) close(ref.map((m) => m.aux_loss!), got.map((m) => m.aux_loss!), 1e-5, "aux losses");
  expect(got.map((m) => m.expert_load)).toEqual(ref.map((m) => m.expert_load));
  close(ref.map((m) => m.grad_norm), got.map((m) => m.grad_norm), 1e-4, "grad norms");
  close(ref.at(-1)!.param_stats!, got.at(-1)!.param_stats!, 1e-4, "parameter stats after 5 steps");
}

let ref: MetricsLine[];
const refOut = tempDir("moe-ep-w1");
beforeAll(async () => {
  ref = await run(1, { save_steps: 3, save_hf_weights: false }, refOut); // the step-3 checkpoint: reshard ep 1 -> 2
}, 60_000);

test("ep 2 on 2 ranks = 1 rank (aux loss on); its checkpoint merges into the Hub's per-expert names", async () => {
  expect(ref.length).toBe(5);
  for (const m of ref) {
    expect(m.aux_loss!).toBeGreaterThan(0);
    expect(Math.abs(m.loss - (m.lm_loss! + 0.02 * m.aux_loss!))).toBeLessThan(1e-6);
  }
  const out = tempDir("moe-ep-2");
  const got = await run(2, { expert_parallel_size: 2, save_steps: 5 }, out);
  expectSameRun(ref, got);
  expect(childPids()).toEqual([]);
  const save = join(out, "hf");
  mergeToHf({ loadDir: join(out, "checkpoints", "global_step_5"), modelAssetsDir: join(out, "model_assets"), saveDir: save, shardBytes: parseSize("2GB"), dtype: "F32" });
  const hub = new SafetensorsFolder(join(QWEN3_MOE, ".."));
  const merged = new SafetensorsFolder(save);
  expect(merged.names().sort()).toEqual(hub.names().sort());
  for (const e of [0, 3]) for (const p of ["gate", "up", "down"]) expect(merged.names()).toContain(`model.layers.2.mlp.experts.${e}.${p}_proj.weight`);
  for (const n of hub.names()) expect([n, merged.info(n)!.shape]).toEqual([n, hub.info(n)!.shape]);
  let sumSq = 0; // the trained values: sum of squares of every merged tensor = the run's param_stats
  for (const n of merged.names()) for (const x of merged.readF32(n)) sumSq += x * x;
  const stats = got.at(-1)!.param_stats!;
  close([stats.reduce((a, v, i) => a + (i % 3 === 1 ? v : 0), 0)], [sumSq], 1e-5, "sum of squares of the merged parameters");
  hub.close();
  merged.close();
}, 60_000);

test("deepseek_v3, ep 2 on 2 ranks = 1 rank, with rank 1 receiving no rows in layer 1 (its experts get no gradient)", async () => {
  await writeSkewedDeepseek();
  const model = { model_path: skewedDir };
  const one = await run(1, {}, tempDir("moe-ep-ds-w1"), model);
  for (const m of one) {
    expect(m.expert_load![0].slice(4)).toEqual([0, 0, 0, 0]); // layer 1: no token routed to rank 1's experts
    expect(m.expert_load![0].slice(0, 4).reduce((a, b) => a + b, 0)).toBe(2 * m.tokens);
    expect(m.expert_load![1].slice(4).reduce((a, b) => a + b, 0)).toBeGreaterThan(0); // layer 2: rank 1 computes
  }
  const out = tempDir("moe-ep-ds-w2");
  const got = await run(2, { expert_parallel_size: 2, save_steps: 5, save_hf_weights: false }, out, model);
  expectSameRun(one, got);
  // experts 4-7 of layer 1 never saw a row: only weight decay moved them
  mergeToHf({ loadDir: join(out, "checkpoints", "global_step_5"), modelAssetsDir: join(out, "model_assets"), saveDir: join(out, "hf"), shardBytes: parseSize("2GB"), dtype: "F32" });
  const init = new SafetensorsFolder(skewedDir), trained = new SafetensorsFolder(join(out, "hf"));
  for (const [e, moved] of [[5, false], [1, true]] as const) {
    const n = `model.layers.1.mlp.experts.${e}.down_proj.weight`;
    const a = init.readF32(n), b = trained.readF32(n);
    const decayOnly = a.every((x, i) => Math.abs(b[i] - x * (1 - 1e-2 * 0.1) ** 5) <= 1e-6 * (1 + Math.abs(x)));
    expect([n, decayOnly]).toEqual([n, !moved]);
  }
  init.close();
  trained.close();
}, 90_000);

test("ep 2 x ep_fsdp 2 on 4 ranks (dense FSDP over 4, experts over ep_fsdp 2), activations kept (no recompute) = 1 rank", async () => {
  // (the other runs recompute each layer in backward, as enable_gradient_checkpointing's default:
  // the exchange runs again there; here every layer keeps its own)
  expectSameRun(ref, await run(4, { expert_parallel_size: 2, enable_gradient_checkpointing: false }));
  expect(childPids()).toEqual([]);
}, 90_000);

test("HSDP 2 replicas x (ep 2 over dp_shard 2) on 4 ranks = 1 rank: each replica holds every expert, expert grads all-reduced over the replicas", async () => {
  expectSameRun(ref, await run(4, { expert_parallel_size: 2, data_parallel_replicate_size: 2 }));
  expect(childPids()).toEqual([]);
}, 90_000);

test("reshard: 3 steps at ep 2 on 2 ranks, resumed at ep 1 on 1 rank = the uninterrupted run", async () => {
  const out = tempDir("moe-ep-reshard");
  const first = await run(2, { expert_parallel_size: 2, max_steps: 3, save_steps: 3, save_hf_weights: false }, out);
  expect(first.length).toBe(3);
  const all = await run(1, { load_checkpoint_path: "auto", save_hf_weights: false }, out);
  const resumed = all.slice(3);
  expect(resumed.map((m) => m.step)).toEqual([4, 5]);
  close(ref.slice(3).map((m) => m.loss), resumed.map((m) => m.loss), 1e-5, "resumed losses");
  close(ref.slice(3).map((m) => m.grad_norm), resumed.map((m) => m.grad_norm), 1e-4, "resumed grad norms");
  close(ref.at(-1)!.param_stats!, resumed.at(-1)!.param_stats!, 1e-4, "parameter stats after 5 steps");
}, 90_000);

test("reshard: the one-process run's step-3 checkpoint resumed at ep 2 on 2 ranks = the uninterrupted run", async () => {
  const all = await run(2, { expert_parallel_size: 2, load_checkpoint_path: join(refOut, "checkpoints", "global_step_3"), save_hf_weights: false });
  const resumed = all.slice(-2);
  expect(resumed.map((m) => m.step)).toEqual([4, 5]);
  close(ref.slice(3).map((m) => m.loss), resumed.map((m) => m.loss), 1e-5, "resumed losses");
  close(ref.slice(3).map((m) => m.grad_norm), resumed.map((m) => m.grad_norm), 1e-4, "resumed grad norms");
  close(ref.at(-1)!.param_stats!, resumed.at(-1)!.param_stats!, 1e-4, "parameter stats after 5 steps");
}, 90_000);
