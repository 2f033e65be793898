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
  expect(sizes.sort()).toEqual(["context_parallel_size", "expert_parallel_size", "pipeline_parallel_size", "tensor_parallel_size"]);
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
