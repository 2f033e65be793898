// The plan builder's pure parts: mesh sizes from every configured size (a bad factorisation
// refused with every factor named), the loader's data-parallel coordinate from the mesh, and
// unit hooks of several plans stacking instead of replacing each other.
import { expect, test } from "bun:test";
import { ConfigSchema, SUPPORT } from "../../configs/index.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { createModel } from "../../models/index.ts";
import { parallelize, parallelSizes } from "../../parallel/index.ts";

const train = (t: object) => ConfigSchema.parse({ train: t }).train;

test("parallelSizes: dp_shard is what the other axes leave; a bad factorisation names every factor", () => {
  expect(parallelSizes(train({ data_parallel_mode: "fsdp2", data_parallel_replicate_size: 2 }), 8)).toEqual({ pp: 1, dp_replicate: 2, dp_shard: 4, ulysses: 1, tp: 1 });
  expect(() => parallelSizes(train({ data_parallel_replicate_size: 3 }), 4)).toThrow("mesh: pp(1) * dp_replicate(3) * dp_shard(1) * ulysses(1) * tp(1) != world_size(4)");
  expect(() => parallelSizes(train({ data_parallel_replicate_size: 8 }), 4)).toThrow("dp_replicate(8) * dp_shard(1)");
  expect(() => parallelSizes(train({ tensor_parallel_size: 2 }), 4)).toThrow("train.tensor_parallel_size = 2: not implemented yet");
  // one list: every parallel size the support table refuses is what the plan builder refuses
  const sizes = SUPPORT.filter((r) => r.action === "refuse" && r.key.endsWith("_parallel_size")).map((r) => r.key.slice("train.".length));
  expect(sizes.sort()).toEqual(["context_parallel_size", "pipeline_parallel_size", "tensor_parallel_size"]);
  for (const f of sizes) expect(() => parallelSizes(train({ [f]: 2 }), 4)).toThrow(`train.${f} = 2: not implemented yet (plans: ddp, fsdp1/fsdp2, hsdp, ulysses); expected 1`);
  expect(() => parallelSizes(train({ data_parallel_mode: "fsdp2-vescale" }), 2)).toThrow('train.data_parallel_mode = "fsdp2-vescale": not implemented yet; use ddp, fsdp1 or fsdp2');
});

test("one process: the whole mesh is rank 0, data rank 0 of 1, whole units, hooks of several plans all run in order", async () => {
  const k = createCpuKernels({ threads: 1 });
  const model = createModel(k, { model_type: "qwen2", vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1,
    num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 16, tie_word_embeddings: false }, "plan.test", { maxTokens: 8, gradientCheckpointing: false });
  const config = ConfigSchema.parse({ train: { data_parallel_mode: "fsdp2" } });
  const p = await parallelize({ k, model, config, rank: 0, world: 1, comm: null });
  expect([p.dataRank, p.dataSize, p.mesh.worldSize]).toEqual([0, 1, 1]);
  expect(p.shardOf(0)).toBeNull();
  const seen: string[] = [];
  model.addHooks({ beforeUnitForward: (u) => void seen.push(`a${u}`) });
  model.addHooks({ beforeUnitForward: async (u) => void seen.push(`b${u}`) });
  const mb = { inputIds: Int32Array.from([1, 2, 3, 4]), labels: Int32Array.from([1, 2, 3, 4]), positionIds: Int32Array.from([0, 1, 2, 3]), cuSeqlens: Int32Array.from([0, 4]), validTokens: 3 };
  await model.forward(mb, k.alloc([1]), 1 / 3, false);
  expect(seen).toEqual(["a0", "b0", "a1", "b1", "a2", "b2"]);
});

test("ulysses: impossible head counts are refused by the builder before any group, naming the field and the counts", async () => {
  const k = createCpuKernels({ threads: 1 });
  const model = createModel(k, { model_type: "qwen2", vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1,
    num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 16, tie_word_embeddings: false }, "plan.test", { maxTokens: 8, gradientCheckpointing: false });
  const config = ConfigSchema.parse({ train: { data_parallel_mode: "fsdp2", ulysses_parallel_size: 4 }, launch: { world_size: 4 } });
  await expect(parallelize({ k, model, config, rank: 0, world: 4, comm: null })).rejects.toThrow("train.ulysses_parallel_size(4) must divide num_attention_heads(2)");
});

test("expert parallel: bad sizes are refused naming the fields and numbers, before any group", async () => {
  // ep must divide the FSDP size (dp_shard * ulysses); needs FSDP; Ulysses is not combined yet
  expect(() => parallelSizes(train({ data_parallel_mode: "fsdp2", expert_parallel_size: 3 }), 4)).toThrow("train.expert_parallel_size(3) must divide the FSDP size dp_shard * ulysses (4) of launch.world_size(4)");
  expect(() => parallelSizes(train({ data_parallel_mode: "fsdp2", expert_parallel_size: 2 }), 1)).toThrow("train.expert_parallel_size(2) must divide the FSDP size dp_shard * ulysses (1)");
  // HSDP: ep splits each replica's shard group, so it must divide dp_shard * ulysses, not the world
  expect(parallelSizes(train({ data_parallel_mode: "fsdp2", data_parallel_replicate_size: 2, expert_parallel_size: 4 }), 8)).toEqual({ pp: 1, dp_replicate: 2, dp_shard: 4, ulysses: 1, tp: 1 });
  expect(() => parallelSizes(train({ data_parallel_mode: "fsdp2", data_parallel_replicate_size: 2, expert_parallel_size: 4 }), 4)).toThrow("train.expert_parallel_size(4) must divide the FSDP size dp_shard * ulysses (2) of launch.world_size(4)");
  expect(() => parallelSizes(train({ data_parallel_mode: "ddp", expert_parallel_size: 2 }), 2)).toThrow("train.expert_parallel_size(2) needs train.data_parallel_mode fsdp1 or fsdp2");
  expect(() => parallelSizes(train({ data_parallel_mode: "fsdp2", ulysses_parallel_size: 2, expert_parallel_size: 2 }), 4)).toThrow("train.expert_parallel_size(2) with train.ulysses_parallel_size(2): not implemented yet");
  expect(parallelSizes(train({ data_parallel_mode: "fsdp2", expert_parallel_size: 2 }), 4)).toEqual({ pp: 1, dp_replicate: 1, dp_shard: 4, ulysses: 1, tp: 1 });
  // the model's side: num_experts % ep, and a dense model
  const k = createCpuKernels({ threads: 1 });
  const moe = (E: number) => createModel(k, { model_type: "qwen3_moe", vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1,
    num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8, max_position_embeddings: 16, num_experts: E, num_experts_per_tok: 2, moe_intermediate_size: 8 },
    "plan.test", { maxTokens: 8, gradientCheckpointing: false, meta: true });
  const config = ConfigSchema.parse({ train: { data_parallel_mode: "fsdp2", expert_parallel_size: 4 }, launch: { world_size: 4 } });
  await expect(parallelize({ k, model: moe(6), config, rank: 0, world: 4, comm: null })).rejects.toThrow("train.expert_parallel_size(4) must divide num_experts (6) of the model");
  const dense = createModel(k, { model_type: "qwen2", vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1,
    num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 16 }, "plan.test", { maxTokens: 8, gradientCheckpointing: false });
  await expect(parallelize({ k, model: dense, config, rank: 0, world: 4, comm: null })).rejects.toThrow("train.expert_parallel_size(4) with model qwen2: it has no routed experts; expected 1");
});

test("MoE layout: each sparse layer's experts are a unit of their own, nested in the layer's hooks; holdExperts keeps a contiguous expert range", async () => {
  const k = createCpuKernels({ threads: 1 });
  const cfg = { model_type: "qwen3_moe", vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, mlp_only_layers: [0],
    num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8, max_position_embeddings: 16, num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8 };
  const model = createModel(k, cfg, "plan.test", { maxTokens: 8, gradientCheckpointing: false });
  expect(model.layout.units.map((u) => u.name)).toEqual(["embed", "layers.0", "layers.1", "head", "layers.1.experts"]);
  expect(model.layout.expertUnits).toEqual([-1, 4]);
  expect(model.forwardUnits).toEqual([0, 1, 2, 4, 3]);
  expect(model.backwardUnits).toEqual([3, 2, 4, 1, 0]);
  const seen: string[] = [];
  model.addHooks({ beforeUnitForward: (u) => void seen.push(`+${u}`), afterUnitForward: (u) => void seen.push(`-${u}`) });
  const mb = { inputIds: Int32Array.from([1, 2, 3, 4]), labels: Int32Array.from([1, 2, 3, 4]), positionIds: Int32Array.from([0, 1, 2, 3]), cuSeqlens: Int32Array.from([0, 4]), validTokens: 3 };
  await model.forward(mb, k.alloc([1]), 1 / 3, false);
  expect(seen).toEqual(["+0", "-0", "+1", "-1", "+2", "+4", "-4", "-2", "+3", "-3"]);
  const meta = createModel(k, cfg, "plan.test", { maxTokens: 8, gradientCheckpointing: false, meta: true });
  meta.holdExperts(2, 2);
  const x = meta.layout.units[4];
  expect(x.experts).toEqual({ layer: 1, first: 2, count: 2 });
  expect(x.params.map((p) => [p.name.replace("model.layers.1.mlp.experts.", ""), p.offset])).toEqual([
    ["2.gate_proj.weight", 0], ["2.up_proj.weight", 128], ["3.gate_proj.weight", 256], ["3.up_proj.weight", 384], ["2.down_proj.weight", 512], ["3.down_proj.weight", 640],
  ]);
  expect(meta.layout.byName.has("model.layers.1.mlp.experts.0.gate_proj.weight")).toBe(false);
  expect(x.all!.map((p) => p.name)).toEqual(model.layout.units[4].params.map((p) => p.name)); // the every-expert unit, for checkpoint shapes
  expect(() => model.holdExperts(0, 2)).toThrow("holdExperts needs a meta model");
});
