// Whole models on the WebGPU backend: Hugging Face's tiny-random-llama-2 logits, the torch-made
// qwen2/qwen3, MoE (qwen3_moe, qwen2_moe, deepseek_v3) and VL (qwen2_vl, qwen2_5_vl) fixtures (three AdamW steps with clipping), and ten training steps of a tiny random
// Llama whose losses must follow the CPU backend's. Same model code, only the backend differs.
//
// Tolerance: HF logits as the fixture states (1e-5 abs + rel); losses 1e-4 absolute and grad norms
// 1e-4 relative against torch or the CPU backend (f32 sums in a different order, compounded over steps).
import { expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import pino from "pino";
import { runLocalTraining } from "../../actors/local.ts";
import { loadConfig } from "../../configs/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import type { MicroBatch } from "../../data/batch.ts";
import { createKernels, type Kernels } from "../../kernels/index.ts";
import { SafetensorsFile } from "../../checkpoint/safetensors.ts";
import { probeAdapter } from "../../kernels/webgpu/index.ts";
import { argmax, createModel, initWeights, loadPretrained } from "../../models/index.ts";
import { FIXTURES, readExpected, singleRow, toMicroBatch } from "../models/fixtures.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000);
const probe = await probeAdapter();

if (!probe.ok) {
  test(`webgpu model: SKIPPED, no adapter: ${probe.reason}`, () => {
    console.warn(`webgpu model: SKIPPED, no adapter: ${probe.reason}`);
  });
} else {
  const gpu = await createKernels({ backend: "webgpu", threads: 1 });
  const cpu = await createKernels({ backend: "cpu", threads: 1 });

  test("tiny-random-llama-2: logits match Hugging Face on WebGPU", async () => {
    const dir = `${FIXTURES}tiny-random-llama-2`;
    const ref = JSON.parse(readFileSync(`${dir}/reference_logits.json`, "utf8")) as {
      logit_tolerance: { absolute: number; relative: number };
      model_cases: { input_ids: number[]; greedy_token: number; sampled_logits: Record<string, number> }[];
    };
    const model = loadPretrained(gpu, dir, { maxTokens: 16, gradientCheckpointing: false });
    const V = model.config.V;
    for (const c of ref.model_cases) {
      const last = (await model.logits(singleRow(c.input_ids))).subarray((c.input_ids.length - 1) * V);
      for (const [idx, want] of Object.entries(c.sampled_logits)) {
        expect(Math.abs(last[Number(idx)]! - want)).toBeLessThanOrEqual(ref.logit_tolerance.absolute + ref.logit_tolerance.relative * Math.abs(want));
      }
      expect(argmax(last)).toBe(c.greedy_token);
    }
  });

  for (const name of ["qwen2-tiny", "qwen3-tiny", "qwen3_moe-tiny", "qwen2_moe-tiny", "deepseek_v3-tiny", "qwen3_moe-sparse2", "deepseek_v3-plain"]) {
    test(`${name}: three AdamW steps with clipping match torch on WebGPU (loss, grad norm)`, async () => {
      const exp = readExpected(name);
      const model = loadPretrained(gpu, `${FIXTURES}${name}`, { maxTokens: 16, gradientCheckpointing: false });
      const trainer = new Trainer(model, {
        schedule: { lr: exp.train.lr, lr_min: 0, lr_start: 0, train_steps: 3, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
        weightDecay: exp.train.weight_decay, maxGradNorm: exp.train.max_grad_norm,
      });
      for (let s = 0; s < 3; s++) {
        const m = await trainer.step(s, exp.micro_batches.map(toMicroBatch));
        expect(Math.abs(m.loss - exp.steps[s]!.loss)).toBeLessThan(1e-4);
        expect(Math.abs(m.grad_norm - exp.steps[s]!.grad_norm) / exp.steps[s]!.grad_norm).toBeLessThan(1e-4);
      }
    });
  }

  for (const name of ["qwen2-vl-tiny", "qwen2_5-vl-tiny"]) {
    test(`${name}: vision tower (LayerNorm/QuickGELU or RMSNorm/SwiGLU, full and window attention) and three AdamW steps match torch on WebGPU`, async () => {
      const dir = `${FIXTURES}${name}`;
      const exp = readExpected(name);
      const grids = (exp as unknown as { micro_batches: { image_grid_thw: number[][] }[] }).micro_batches.map((m) => m.image_grid_thw);
      const ref = new SafetensorsFile(`${dir}/expected.safetensors`);
      const mbs: MicroBatch[] = exp.micro_batches.map((m, i) => ({
        ...toMicroBatch(m),
        pixelValues: ref.tensors.has(`pixel_values.${i}`) ? ref.readF32(`pixel_values.${i}`) : null,
        imageGridThw: grids[i].length ? Int32Array.from(grids[i].flat()) : null,
      }));
      const model = loadPretrained(gpu, dir, { maxTokens: 32, gradientCheckpointing: false });
      const out = await model.vision!.forward(model.params, {}, mbs[0].pixelValues!, mbs[0].imageGridThw!);
      const want = ref.readF32("vision.0");
      const got = await gpu.read(out);
      let d = 0, mx = 0;
      for (let i = 0; i < want.length; i++) [d, mx] = [Math.max(d, Math.abs(got[i]! - want[i]!)), Math.max(mx, Math.abs(want[i]!))];
      expect(d / mx).toBeLessThan(1e-4);
      const trainer = new Trainer(model, {
        schedule: { lr: exp.train.lr, lr_min: 0, lr_start: 0, train_steps: 3, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
        weightDecay: exp.train.weight_decay, maxGradNorm: exp.train.max_grad_norm,
      });
      for (let s = 0; s < 3; s++) {
        const m = await trainer.step(s, mbs);
        expect(Math.abs(m.loss - exp.steps[s]!.loss)).toBeLessThan(1e-4);
        expect(Math.abs(m.grad_norm - exp.steps[s]!.grad_norm) / exp.steps[s]!.grad_norm).toBeLessThan(1e-4);
      }
      ref.close();
    });
  }

  test("ten training steps of a tiny Llama: WebGPU losses follow the CPU backend", async () => {
    // Two packed rows of samples with restarting positions, GQA, tied embeddings.
    const V = 256, seq = 32, T = 64;
    const raw = {
      model_type: "llama", vocab_size: V, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, intermediate_size: 128, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true,
      max_position_embeddings: seq, initializer_range: 0.02,
    };
    let seed = 7;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % V;
    const batches: MicroBatch[] = Array.from({ length: 10 }, () => {
      const ids = Int32Array.from({ length: T }, rand);
      const cu = Int32Array.from([0, 20, 32, 64]);
      const pos = Int32Array.from({ length: T }, (_, i) => (i < 20 ? i : i < 32 ? i - 20 : i - 32));
      return { inputIds: ids, labels: ids, positionIds: pos, cuSeqlens: cu, validTokens: T - 3 };
    });
    const run = async (k: Kernels) => {
      const model = createModel(k, raw, "webgpu test tiny", { maxTokens: T, gradientCheckpointing: false });
      initWeights(model, 0);
      const trainer = new Trainer(model, {
        schedule: { lr: 3e-3, lr_min: 0, lr_start: 0, train_steps: 10, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
        weightDecay: 0.1, maxGradNorm: 1,
      });
      const out: { loss: number; norm: number }[] = [];
      for (let s = 0; s < 10; s++) {
        const m = await trainer.step(s, [batches[s]!]);
        out.push({ loss: m.loss, norm: m.grad_norm });
      }
      return out;
    };
    const a = await run(cpu), b = await run(gpu);
    console.log(`webgpu vs cpu losses: ${b.map((x, i) => `${x.loss.toFixed(5)}/${a[i]!.loss.toFixed(5)}`).join(" ")}`);
    for (let s = 0; s < 10; s++) {
      expect(Math.abs(b[s]!.loss - a[s]!.loss)).toBeLessThan(1e-4);
      expect(Math.abs(b[s]!.norm - a[s]!.norm) / a[s]!.norm).toBeLessThan(1e-4);
    }
    expect(a[9]!.loss).toBeLessThan(a[0]!.loss); // it learned something
  });

  test("the same training command with --kernels.backend webgpu gives the CPU losses (runLocalTraining)", async () => {
    const dir = tempDir("webgpu");
    const rows = Array.from({ length: 12 }, (_, r) => JSON.stringify({ input_ids: Array.from({ length: 12 }, (_, i) => 3 + ((r + i) % 7)) }));
    writeFileSync(`${dir}/data.jsonl`, rows.join("\n") + "\n");
    const losses: Record<string, number[]> = {};
    for (const backend of ["cpu", "webgpu"]) {
      const { config } = loadConfig([
        "--model.config_path", `${FIXTURES}qwen2-tiny/config.json`, "--data.train_path", `${dir}/data.jsonl`,
        "--data.data_type", "plaintext", "--data.max_seq_len", "32", "--train.output_dir", `${dir}/${backend}`,
        "--train.micro_batch_size", "2", "--train.global_batch_size", "4", "--train.max_steps", "4", "--train.lr", "0.01",
        "--train.enable_gradient_checkpointing", "true", "--train.use_wandb", "false", "--kernels.backend", backend, "--kernels.threads", "1",
        "--train.enable_mixed_precision", "false", // webgpu computes in f32: compare the f32 runs
      ]);
      const res = await runLocalTraining(config, pino({ level: "silent" }));
      losses[backend] = readFileSync(res.metricsPath, "utf8").trim().split("\n").map((l) => JSON.parse(l).loss as number);
    }
    expect(losses.webgpu!.length).toBe(4);
    for (let s = 0; s < 4; s++) expect(Math.abs(losses.webgpu![s]! - losses.cpu![s]!)).toBeLessThan(1e-4);
  });
}
