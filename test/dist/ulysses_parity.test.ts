// Ulysses sequence parallelism against one process, same data and seed: losses, grad norms and
// the parameters themselves after 5 steps (each run's final checkpoint merged to f32 and loaded)
// within f32 tolerance. Rows are packed by dyn_bsz (several samples per row, so samples cross
// the ranks' slice boundaries) and their lengths are mostly not multiples of the group size.
// The tiny model has 4 query heads and 2 KV heads: ulysses 4 repeats every KV head twice.
// Real worker processes, real TCP mesh, the real model, loader and Trainer.
import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import { mergeToHf } from "../../checkpoint/index.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { loadPretrained } from "../../models/index.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { close, tinyTrainConfig } from "./actors_parity_setup.ts";

const dir = tempDir("ulysses");
const k = createCpuKernels({ threads: 1 });
// two packed rows of up to 32 tokens per step and data rank
const PACKED = { dyn_bsz: true, micro_batch_size: 2, dyn_bsz_buffer_size: 4, save_steps: 5, save_hf_weights: false };

interface Run { metrics: MetricsLine[]; params: Float32Array[] }

async function run(world: number, train: object): Promise<Run> {
  const out = tempDir(`ulysses-w${world}`);
  const { logger, file } = fileLogger(out);
  const code = await runJob(tinyTrainConfig(dir, out, { world_size: world }, { ...PACKED, ...train }), logger);
  if (code !== 0) throw new Error(`world ${world} ${JSON.stringify(train)}: exit ${code}; see ${file}`);
  const save = join(out, "f32");
  mergeToHf({ loadDir: join(out, "checkpoints/global_step_5"), modelAssetsDir: join(out, "model_assets"), saveDir: save, shardBytes: 1 << 30, dtype: "F32" });
  const model = loadPretrained(k, save, { maxTokens: 8, gradientCheckpointing: false });
  return { metrics: readMetrics(out) as unknown as MetricsLine[], params: model.params.map((p) => p.host!.slice()) };
}

function expectSame(ref: Run, got: Run, what: string): void {
  expect(got.metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
  expect(got.metrics.map((m) => m.tokens)).toEqual(ref.metrics.map((m) => m.tokens)); // padding is not counted
  close(ref.metrics.map((m) => m.loss), got.metrics.map((m) => m.loss), 1e-5, `${what}: losses`);
  close(ref.metrics.map((m) => m.grad_norm), got.metrics.map((m) => m.grad_norm), 1e-4, `${what}: grad norms`);
  ref.params.forEach((p, u) => close([...p], [...got.params[u]], 1e-4, `${what}: unit ${u} parameters after 5 steps`));
  expect(childPids()).toEqual([]);
}

let one: Run;
beforeAll(async () => {
  one = await run(1, {});
}, 60_000);

describe("ulysses vs one process", () => {
  test("ulysses 2 on 2 ranks, fsdp1 ZeRO-2 (sharded over dp_shard x ulysses)", async () => {
    expectSame(one, await run(2, { data_parallel_mode: "fsdp1", enable_full_shard: false, ulysses_parallel_size: 2 }), "ulysses 2");
  }, 60_000);

  test("ulysses 4 on 4 ranks (> 2 KV heads: repeated), ddp, activation checkpointing", async () => {
    expectSame(one, await run(4, { data_parallel_mode: "ddp", ulysses_parallel_size: 4, enable_gradient_checkpointing: true }), "ulysses 4");
  }, 60_000);
});

test("ulysses 2 x dp 2 on 4 ranks (HSDP: replicas x [dp_shard 1 x ulysses 2] shards, async) = dp 2 on 2 ranks (fsdp2)", async () => {
  const dp2 = await run(2, { data_parallel_mode: "fsdp2" });
  expectSame(dp2, await run(4, { data_parallel_mode: "fsdp2", data_parallel_replicate_size: 2, ulysses_parallel_size: 2, ulysses_async: true }), "ulysses 2 x dp 2");
}, 90_000);

test("async Ulysses gives bitwise the losses and grad norms of sync Ulysses", async () => {
  const out = (tag: string) => tempDir(`ulysses-${tag}`);
  const a = out("sync"), b = out("async");
  const cfg = (o: string, async: boolean) => tinyTrainConfig(dir, o, { world_size: 2 }, { ...PACKED, save_steps: 0, data_parallel_mode: "ddp", ulysses_parallel_size: 2, ulysses_async: async });
  expect(await runJob(cfg(a, false), fileLogger(a).logger)).toBe(0);
  expect(await runJob(cfg(b, true), fileLogger(b).logger)).toBe(0);
  const [sa, sb] = [readMetrics(a), readMetrics(b)];
  expect(sb.map((m) => m.loss)).toEqual(sa.map((m) => m.loss));
  expect(sb.map((m) => m.grad_norm)).toEqual(sa.map((m) => m.grad_norm));
  expect(sb.at(-1)!.param_stats).toEqual(sa.at(-1)!.param_stats);
  expect(childPids()).toEqual([]);
}, 60_000);

test("a checkpoint saved at ulysses 2 (fsdp2, 2 ranks) resumes at ulysses 1 (one rank) with the same losses", async () => {
  const a = tempDir("ulysses-save"), b = tempDir("ulysses-resume");
  const saved = tinyTrainConfig(dir, a, { world_size: 2 }, { ...PACKED, save_steps: 3, data_parallel_mode: "fsdp2", ulysses_parallel_size: 2 });
  expect(await runJob(saved, fileLogger(a).logger)).toBe(0);
  const resumed = tinyTrainConfig(dir, b, { world_size: 1 }, { ...PACKED, save_steps: 0, data_parallel_mode: "fsdp2", load_checkpoint_path: join(a, "checkpoints/global_step_3") });
  expect(await runJob(resumed, fileLogger(b).logger)).toBe(0);
  const [sa, sb] = [readMetrics(a), readMetrics(b)];
  expect(sb.map((m) => m.step)).toEqual([4, 5]);
  expect(sb.map((m) => m.tokens)).toEqual(sa.slice(3).map((m) => m.tokens)); // the same rows: the loader's position resumed
  close(sa.slice(3).map((m) => m.loss!), sb.map((m) => m.loss!), 1e-5, "losses after resume");
  expect(childPids()).toEqual([]);
}, 60_000);
