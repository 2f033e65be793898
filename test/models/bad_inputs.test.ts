// Bad inputs fail at the edge with messages naming the file, the tensor and the expectation:
// unknown model_type, a checkpoint whose shapes differ from config.json (every mismatch listed),
// corrupted and truncated safetensors.
import { expect, test } from "bun:test";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { createKernels } from "../../kernels/index.ts";
import { SafetensorsFile, writeSafetensors } from "../../checkpoint/safetensors.ts";
import { loadPretrained } from "../../models/index.ts";
import { FIXTURES } from "./fixtures.ts";
import { tempDir } from "../harness/tmp.ts";

const k = await createKernels({ backend: "cpu", threads: 1 });
const opts = { maxTokens: 8, gradientCheckpointing: false };

const withTemp = (fn: (dir: string) => void): void => fn(tempDir("models"));

function copyFixture(dir: string, name: string, cfg?: (c: Record<string, unknown>) => void): void {
  const c = JSON.parse(readFileSync(`${FIXTURES}${name}/config.json`, "utf8"));
  cfg?.(c);
  writeFileSync(`${dir}/config.json`, JSON.stringify(c));
  copyFileSync(`${FIXTURES}${name}/model.safetensors`, `${dir}/model.safetensors`);
}

test("unknown model_type lists the supported ones", () => {
  withTemp((dir) => {
    copyFixture(dir, "qwen2-tiny", (c) => (c.model_type = "gpt_neox"));
    expect(() => loadPretrained(k, dir, opts)).toThrow(/config\.json: model_type "gpt_neox" is not supported \(supported: deepseek_v3, llama, qwen2, qwen2_5_vl, qwen2_moe, qwen2_vl, qwen3, qwen3_moe\)/);
  });
});

test("VL configs: a missing vision_config, bad mrope_section, a merger width unlike the text's, each named", () => {
  const cases: [(c: Record<string, any>) => void, RegExp][] = [
    [(c) => delete c.vision_config, /config\.json: "vision_config" is required for model_type qwen2_vl/],
    [(c) => (c.rope_scaling.mrope_section = [2, 3, 4]), /rope_scaling\.mrope_section \[2,3,4\] must sum to head_dim \/ 2 = 8/],
    [(c) => delete c.rope_scaling, /rope_scaling\.mrope_section must be 3 non-negative integers/],
    [(c) => (c.vision_config.hidden_size = 48), /vision_config: merger output 48 must equal the text hidden_size 32/],
    [(c) => (c.vision_config.hidden_act = "gelu"), /vision_config: hidden_act "gelu" is not supported for qwen2_vl \(expected quick_gelu\)/],
    [(c) => delete c.image_token_id, /config\.json: "image_token_id" must be a non-negative integer/],
  ];
  for (const [edit, want] of cases) {
    withTemp((dir) => {
      copyFixture(dir, "qwen2-vl-tiny", edit);
      expect(() => loadPretrained(k, dir, opts)).toThrow(want);
    });
  }
});

test("VL rows: image tokens without pixel_values, and features that do not match the tokens, are named", async () => {
  const model = loadPretrained(k, `${FIXTURES}qwen2-vl-tiny`, opts);
  const ids = Int32Array.from([5, 120, 122, 122, 121, 7]);
  const row = { inputIds: ids, labels: ids, positionIds: Int32Array.from([0, 1, 2, 3, 4, 5]), cuSeqlens: Int32Array.from([0, 6]), validTokens: 5 };
  await expect(model.logits(row)).rejects.toThrow(/micro-batch: image_grid_thw has 0 rows; the input ids hold more images/);
  await expect(model.logits({ ...row, imageGridThw: Int32Array.from([1, 2, 4]) }))
    .rejects.toThrow(/micro-batch has 2 image tokens \(image_token_id 122\) but no pixel_values/);
  const grid = Int32Array.from([1, 2, 4]); // 8 patches -> 2 features: matches; [1, 2, 2] -> 1 feature: does not
  await expect(model.logits({ ...row, pixelValues: new Float32Array(4 * 1176), imageGridThw: Int32Array.from([1, 2, 2]) }))
    .rejects.toThrow(/image features and image tokens do not match: tokens 2, features 1/);
  await expect(model.logits({ ...row, pixelValues: new Float32Array(7 * 1176), imageGridThw: grid }))
    .rejects.toThrow(/vision: pixel_values hold 7 rows of 1176; image_grid_thw needs 8 patches/);
});

test("shape mismatch lists every differing tensor before reading data", () => {
  withTemp((dir) => {
    // intermediate 48 -> 40 changes gate/up/down of both layers; untying adds a missing lm_head
    copyFixture(dir, "qwen2-tiny", (c) => { c.intermediate_size = 40; c.tie_word_embeddings = false; });
    let msg = "";
    try {
      loadPretrained(k, dir, opts);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain("7 mismatches");
    for (const l of [0, 1]) {
      expect(msg).toContain(`model.layers.${l}.mlp.gate_proj.weight: checkpoint shape [48,32] != config shape [40,32]`);
      expect(msg).toContain(`model.layers.${l}.mlp.up_proj.weight: checkpoint shape [48,32] != config shape [40,32]`);
      expect(msg).toContain(`model.layers.${l}.mlp.down_proj.weight: checkpoint shape [32,48] != config shape [32,40]`);
    }
    expect(msg).toContain("missing lm_head.weight (expected shape [96,32])");
  });
});

test("truncated safetensors names the file and the tensor that runs past the end", () => {
  withTemp((dir) => {
    copyFixture(dir, "qwen2-tiny");
    const bytes = readFileSync(`${dir}/model.safetensors`);
    writeFileSync(`${dir}/model.safetensors`, bytes.subarray(0, bytes.length - 100));
    expect(() => loadPretrained(k, dir, opts)).toThrow(/model\.safetensors: tensor "[^"]+": data_offsets \[\d+,\d+\] run past the \d+-byte data section \(truncated file\?\)/);
    writeFileSync(`${dir}/model.safetensors`, bytes.subarray(0, 20));
    expect(() => new SafetensorsFile(`${dir}/model.safetensors`)).toThrow(/header length \d+ runs past the end of the 20-byte file/);
  });
});

test("corrupted headers: bad JSON, huge length, wrong byte count, overlap, unknown dtype", () => {
  withTemp((dir) => {
    const p = `${dir}/x.safetensors`;
    const raw = (header: string, data = 0) => {
      const h = Buffer.from(header);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(h.length));
      writeFileSync(p, Buffer.concat([len, h, Buffer.alloc(data)]));
    };
    raw("{not json");
    expect(() => new SafetensorsFile(p)).toThrow(/x\.safetensors: header is not valid UTF-8 JSON/);
    writeFileSync(p, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x7f, 1, 2]));
    expect(() => new SafetensorsFile(p)).toThrow(/exceeds the 100000000-byte limit/);
    raw('{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}', 20);
    expect(() => new SafetensorsFile(p)).toThrow(/tensor "w": shape \[2,3\] x F32 needs 24 bytes but data_offsets \[0,20\] span 20/);
    raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 12);
    expect(() => new SafetensorsFile(p)).toThrow(/tensor "b" at \[4,12\] overlaps "a"/);
    raw('{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}', 8);
    expect(() => new SafetensorsFile(p)).toThrow(/tensor "a": unknown dtype "Q4"/);
    raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 12);
    expect(() => new SafetensorsFile(p)).toThrow(/tensors cover 8 bytes but the data section holds 12/);
    writeSafetensors(p, [{ name: "ok", dtype: "F32", shape: [2], data: Float32Array.of(1, 2) }]);
    const f = new SafetensorsFile(p);
    expect(Array.from(f.readF32("ok"))).toEqual([1, 2]);
    f.close();
  });
});

test("MoE config.json: bad expert fields fail naming the file and key", () => {
  withTemp((dir) => {
    const bad: [(c: Record<string, unknown>) => void, RegExp][] = [
      [(c) => (c.num_experts_per_tok = 5), /config\.json: num_experts_per_tok \(5\) must be <= num_experts \(4\)/],
      [(c) => delete c.moe_intermediate_size, /config\.json: "moe_intermediate_size" must be a number, got undefined/],
      [(c) => (c.mlp_only_layers = [3]), /config\.json: "mlp_only_layers" must be a list of layer indices in \[0, 3\), got \[3\]/],
      [(c) => (c.norm_topk_prob = "yes"), /config\.json: "norm_topk_prob" must be true or false, got "yes"/],
      [(c) => (c.decoder_sparse_step = 0), /config\.json: "decoder_sparse_step" must be a positive integer, got 0/],
    ];
    for (const [edit, msg] of bad) {
      copyFixture(dir, "qwen3_moe-tiny", edit);
      expect(() => loadPretrained(k, dir, opts)).toThrow(msg);
    }
    copyFixture(dir, "qwen2_moe-tiny", (c) => delete c.shared_expert_intermediate_size);
    expect(() => loadPretrained(k, dir, opts)).toThrow(/"shared_expert_intermediate_size" must be a number/);
    // a config whose sparse layers differ from the checkpoint's: every expert tensor is listed
    copyFixture(dir, "qwen3_moe-tiny", (c) => (c.mlp_only_layers = [0, 1]));
    expect(() => loadPretrained(k, dir, opts)).toThrow(/unexpected model\.layers\.1\.mlp\.experts\.3\.down_proj\.weight/);
  });
});

test("moeCombine refuses a route index out of range or used twice", () => {
  const T = 2, K = 2, C = 3, R = 5;
  const t = (n: number) => k.alloc([n]);
  const idx = (a: number[]) => {
    const i = k.alloc([a.length], "i32");
    k.upload(i, Int32Array.from(a));
    return i;
  };
  expect(() => k.moeCombine(t(T * C), t(R * C), idx([0, 1, 2, 5]), t(T * K), T, K, C, R)).toThrow("moeCombine.idx[3] = 5 is outside [0, 5)");
  expect(() => k.moeCombineBackward(t(R * C), t(T * K), t(T * C), t(R * C), idx([0, 1, 1, 4]), t(T * K), T, K, C, R))
    .toThrow("moeCombineBackward.idx[2] = 1 repeats an earlier route");
});

test("DeepSeek-V3 config.json: router groups, head dims and routing method are checked", () => {
  withTemp((dir) => {
    const bad: [(c: Record<string, unknown>) => void, RegExp][] = [
      [(c) => (c.n_group = 3), /config\.json: n_routed_experts \(8\) must be a multiple of n_group \(3\)/],
      [(c) => (c.topk_group = 5), /config\.json: topk_group \(5\) groups of 2 experts must hold num_experts_per_tok \(2\) and topk_group <= n_group \(4\)/],
      [(c) => (c.v_head_dim = 17), /config\.json: v_head_dim \(17\) must be <= qk_nope_head_dim \+ qk_rope_head_dim \(16\)/],
      [(c) => (c.scoring_func = "softmax"), /config\.json: scoring_func "softmax" is not supported \(expected sigmoid\)/],
      [(c) => (c.rope_scaling = { type: "dynamic", factor: 2 }), /rope_scaling type "dynamic" is not supported \(supported: default, llama3, yarn\)/],
    ];
    for (const [edit, msg] of bad) {
      copyFixture(dir, "deepseek_v3-tiny", edit);
      expect(() => loadPretrained(k, dir, opts)).toThrow(msg);
    }
  });
});

test("a quantized checkpoint (config.json quantization_config, e.g. DeepSeek-V3's fp8) is refused naming the method", () => {
  withTemp((dir) => {
    copyFixture(dir, "deepseek_v3-tiny", (c) => (c.quantization_config = { quant_method: "fp8", fmt: "e4m3", weight_block_size: [128, 128] }));
    expect(() => loadPretrained(k, dir, opts)).toThrow(/config\.json: quantization_config \(quant_method "fp8"\) is not supported: training reads unquantized weights; dequantize the checkpoint to bf16 or f32 first/);
  });
});

test("DeepSeek-V3: the multi-token-prediction layer after the last decoder layer (model.layers.L.*) is skipped on load, as HF does; other extra tensors are not", async () => {
  const withExtra = (dir: string, extra: string) => {
    copyFixture(dir, "deepseek_v3-tiny");
    const st = new SafetensorsFile(`${dir}/model.safetensors`);
    const tensors = [...st.tensors].map(([name, t]) => ({ name, dtype: "F32" as const, shape: t.shape, data: st.readF32(name) }));
    st.close();
    const eh = new Float32Array(32 * 64).fill(1); // DeepSeek's MTP eh_proj (C, 2C)
    writeSafetensors(`${dir}/model.safetensors`, [...tensors, { name: extra, dtype: "F32", shape: [32, 64], data: eh }]);
  };
  const dir = tempDir("models");
  withExtra(dir, "model.layers.3.eh_proj.weight"); // the fixture has 3 layers: layer 3 is the MTP module
  const m = loadPretrained(k, dir, opts);
  const ref = loadPretrained(k, `${FIXTURES}deepseek_v3-tiny`, opts);
  const ids = { inputIds: Int32Array.of(5, 9, 13), labels: Int32Array.of(5, 9, 13), positionIds: Int32Array.of(0, 1, 2), cuSeqlens: Int32Array.of(0, 3), validTokens: 2 };
  expect(Array.from(await m.logits(ids))).toEqual(Array.from(await ref.logits(ids)));
  withExtra(dir, "model.layers.1.eh_proj.weight"); // inside the model: still a mismatch
  expect(() => loadPretrained(k, dir, opts)).toThrow(/unexpected model\.layers\.1\.eh_proj\.weight \(shape \[32,64\]\)/);
});
