// MoE plans on the WebGPU backend (lavapipe on a CPU-only machine), each rank its own Dawn device,
// their all-to-alls staged through host memory (parallel/staging.ts), against one webgpu process
// on the same data and seed: expert parallelism (ep 2 on 2 ranks, fsdp2: each rank holds 2 of the
// 4 experts of every sparse layer) and Ulysses (ulysses 2 on 2 ranks, fsdp1: the router
// statistics summed over the group) give the same objective, lm_loss, aux_loss, expert load, grad
// norms and parameters after 3 steps. The model is qwen3_moe-tiny with ONE key/value head, so
// Ulysses repeats it on both ranks and sums its gradients (the GQA path of parallel/ulysses.ts).
//
// Tolerance 1e-5 (the webgpu multi-rank tests' figure: the same kernels; only the grouping of
// gradient sums differs); 1e-4 on grad norms and parameters, as the cpu expert-parallel test.
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import { ConfigSchema } from "../../configs/index.ts";
import { probeAdapter } from "../../kernels/webgpu/index.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { close, writeTinyModelAndData } from "./actors_parity_setup.ts";

setDefaultTimeout(60_000);
const probe = await probeAdapter();
const dir = tempDir("moe-webgpu");
const FIXTURE = join(new URL("../fixtures/", import.meta.url).pathname, "qwen3_moe-tiny/config.json");

/** qwen3_moe-tiny's config.json with one KV head (4 query heads of 16). */
function writeModel(): string {
  const cfg = JSON.parse(readFileSync(FIXTURE, "utf8"));
  mkdirSync(join(dir, "model"), { recursive: true });
  const path = join(dir, "model", "config.json");
  writeFileSync(path, JSON.stringify({ ...cfg, num_key_value_heads: 1 }));
  return path;
}

async function run(world: number, train: object = {}): Promise<MetricsLine[]> {
  const out = tempDir(`moe-webgpu-w${world}`);
  const { logger, file } = fileLogger(out);
  const { dataPath } = writeTinyModelAndData(dir);
  const config = ConfigSchema.parse({
    model: { config_path: writeModel() },
    data: { train_path: dataPath, data_type: "plaintext", max_seq_len: 16 },
    train: { output_dir: out, lr: 1e-2, max_steps: 3, micro_batch_size: 1, global_batch_size: 4, dyn_bsz: false, seed: 7,
      enable_mixed_precision: false, weight_decay: 0.1, max_grad_norm: 1.0, save_steps: 0, save_hf_weights: false,
      data_parallel_mode: "fsdp2", ...train },
    launch: { heartbeat_s: 0.5, dead_after_s: 30, world_size: world },
    kernels: { backend: "webgpu" },
  });
  const code = await runJob(config, logger);
  if (code !== 0) throw new Error(`moe webgpu world ${world} ${JSON.stringify(train)}: exit ${code}; see ${file}`);
  return readMetrics(out) as unknown as MetricsLine[];
}

function expectSame(ref: MetricsLine[], got: MetricsLine[], what: string): void {
  expect(got.map((m) => m.step)).toEqual([1, 2, 3]);
  expect(got.map((m) => m.tokens)).toEqual(ref.map((m) => m.tokens));
  close(ref.map((m) => m.loss), got.map((m) => m.loss), 1e-5, `${what}: objectives`);
  close(ref.map((m) => m.lm_loss!), got.map((m) => m.lm_loss!), 1e-5, `${what}: lm losses`);
  close(ref.map((m) => m.aux_loss!), got.map((m) => m.aux_loss!), 1e-5, `${what}: aux losses`);
  expect(got.map((m) => m.expert_load)).toEqual(ref.map((m) => m.expert_load));
  close(ref.map((m) => m.grad_norm), got.map((m) => m.grad_norm), 1e-4, `${what}: grad norms`);
  close(ref.at(-1)!.param_stats!, got.at(-1)!.param_stats!, 1e-4, `${what}: parameter stats after 3 steps`);
  expect(childPids()).toEqual([]);
}

if (!probe.ok) {
  test(`moe webgpu: SKIPPED, no adapter: ${probe.reason}`, () => {
    console.warn(`moe webgpu: SKIPPED, no adapter: ${probe.reason}`);
  });
} else {
  describe("2 webgpu ranks = 1 webgpu process, qwen3_moe-tiny (1 KV head)", () => {
    let one: MetricsLine[];
    beforeAll(async () => {
      one = await run(1);
      for (const m of one) expect(m.aux_loss!).toBeGreaterThan(0);
    });
    test("expert parallel: ep 2 (fsdp2)", async () => {
      expectSame(one, await run(2, { expert_parallel_size: 2 }), "ep 2");
    });
    test("ulysses 2 (fsdp1, async): router statistics over the whole row, the KV head repeated", async () => {
      expectSame(one, await run(2, { data_parallel_mode: "fsdp1", ulysses_parallel_size: 2, ulysses_async: true }), "ulysses 2");
    });
  });
}
