// A vision-language model (qwen2-vl-tiny's config.json, random init) trained by the coordinator's
// worker processes on two pre-tokenized samples, one with an image and one without: with global
// batch 2 every step gives one rank the image and the other none, so the imageless rank runs the
// vision tower on a dummy input (VeOmni's dummy forward) to keep the vision units' collectives in
// step. World size 2 (DDP and FSDP) = 1 process: losses, grad norms, parameters; the same with
// train.freeze_vit. Real worker processes and TCP rings, as actors_parity.test.ts.
import { beforeAll, expect, test } from "bun:test";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import { ConfigSchema } from "../../configs/index.ts";
import { mergeToHf, parseSize } from "../../checkpoint/index.ts";
import { SafetensorsFolder } from "../../checkpoint/safetensors.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { close } from "./actors_parity_setup.ts";

const FIX = new URL("../fixtures/", import.meta.url).pathname;
const dir = tempDir("vl-dp");

beforeAll(() => {
  copyFileSync(join(FIX, "qwen2-vl-tiny/config.json"), join(dir, "config.json"));
  const pp = JSON.parse(readFileSync(join(FIX, "qwen2-vl-tiny/preprocessor_config.json"), "utf8"));
  writeFileSync(join(dir, "preprocessor_config.json"), JSON.stringify({ ...pp, max_pixels: 56 * 84 })); // grey.png -> grid [1,4,4]
  copyFileSync(join(FIX, "images/grey.png"), join(dir, "grey.png"));
  // ids < 120 are text; 120 / 122 / 121 = vision start / image pad (expanded to 4) / vision end
  writeFileSync(join(dir, "data.jsonl"), [
    JSON.stringify({ input_ids: [5, 9, 120, 122, 121, 17, 33, 41, 8, 2], images: ["grey.png"] }),
    JSON.stringify({ input_ids: [7, 11, 19, 23, 29, 31, 37, 2] }),
  ].join("\n") + "\n");
});

async function run(world: number, train: object = {}, out = tempDir(`vl-dp-w${world}`)): Promise<MetricsLine[]> {
  const { logger, file } = fileLogger(out);
  const config = ConfigSchema.parse({
    model: { config_path: join(dir, "config.json") },
    data: { train_path: join(dir, "data.jsonl"), data_type: "plaintext", max_seq_len: 16 },
    train: { output_dir: out, lr: 1e-2, max_steps: 3, micro_batch_size: 1, global_batch_size: 2, dyn_bsz: false, seed: 7,
      enable_mixed_precision: false, // f32: the plan vs one process, to f32 tolerance (docs/mixed_precision.md)
      weight_decay: 0.1, max_grad_norm: 1.0, enable_gradient_checkpointing: false, ...train },
    launch: { heartbeat_s: 0.5, dead_after_s: 20, world_size: world },
    kernels: { backend: "cpu", threads: 1 },
  });
  const code = await runJob(config, logger);
  if (code !== 0) throw new Error(`vl world ${world} ${JSON.stringify(train)}: exit ${code}; see ${file}`);
  return readMetrics(out) as unknown as MetricsLine[];
}

function same(ref: MetricsLine[], got: MetricsLine[], what: string): void {
  expect(got.map((m) => m.tokens)).toEqual(ref.map((m) => m.tokens));
  close(ref.map((m) => m.loss), got.map((m) => m.loss), 1e-5, `${what}: losses`);
  close(ref.map((m) => m.grad_norm), got.map((m) => m.grad_norm), 1e-4, `${what}: grad norms`);
  close(ref.at(-1)!.param_stats!, got.at(-1)!.param_stats!, 1e-4, `${what}: parameter stats after 3 steps`);
  expect(childPids()).toEqual([]);
}

let ref: MetricsLine[];
beforeAll(async () => {
  ref = await run(1);
}, 60_000);

test("ddp and fsdp2, 2 ranks (one with an image, one without) = 1 process; merge writes the Hub's vision names", async () => {
  expect(ref.map((m) => m.tokens)).toEqual([21, 21, 21]); // per step: the image row (10 ids, its pad expanded to 4: 13) + the text row (8)
  same(ref, await run(2, { data_parallel_mode: "ddp" }), "ddp");
  const out = tempDir("vl-dp-fsdp");
  same(ref, await run(2, { data_parallel_mode: "fsdp2", save_steps: 3 }, out), "fsdp2");
  // the sharded checkpoint merges into a Hub folder: the torch fixture's names and shapes (visual.* included)
  const save = join(out, "hf");
  mergeToHf({ loadDir: join(out, "checkpoints", "global_step_3"), modelAssetsDir: join(out, "model_assets"), saveDir: save, shardBytes: parseSize("2GB"), dtype: "F32" });
  const hub = new SafetensorsFolder(join(FIX, "qwen2-vl-tiny"));
  const merged = new SafetensorsFolder(save);
  expect(merged.names().sort()).toEqual(hub.names().sort());
  expect(merged.names()).toContain("visual.merger.mlp.2.weight");
  for (const n of hub.names()) expect([n, merged.info(n)!.shape]).toEqual([n, hub.info(n)!.shape]);
  expect(JSON.parse(readFileSync(join(save, "preprocessor_config.json"), "utf8")).max_pixels).toBe(56 * 84);
  hub.close();
  merged.close();
}, 120_000);

test("train.freeze_vit: fsdp2, 2 ranks = 1 process; the frozen tower changes the run", async () => {
  const frozen = await run(1, { freeze_vit: true });
  same(frozen, await run(2, { data_parallel_mode: "fsdp2", freeze_vit: true }), "fsdp2 + freeze_vit");
  expect(frozen[0].loss).toBeCloseTo(ref[0].loss, 6); // same start
  expect(Math.abs(frozen[2].loss - ref[2].loss)).toBeGreaterThan(1e-4); // then the vision tower no longer learns
  expect(frozen[0].grad_norm).toBeLessThan(ref[0].grad_norm); // the norm leaves the vision grads out
}, 120_000);
