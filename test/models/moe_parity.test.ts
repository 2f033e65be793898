// Qwen3-MoE (qk-norm, head_dim 16 != C/NH, a dense layer through mlp_only_layers, norm_topk_prob),
// Qwen2-MoE (q/k/v bias, shared expert with sigmoid gate, decoder_sparse_step 2, tied) and
// DeepSeek-V3 (MLA with q/kv LoRA, interleaved decoupled RoPE with yarn, v_head_dim < qk head dim;
// sigmoid router with correction bias, group-limited top-k, scaled weights, a shared expert,
// first_k_dense_replace; experts that get no token) against the plain-torch reference of
// test/fixtures/make_moe_fixtures.py: logits, loss (with the load-balancing term for Qwen), every
// gradient, 3 AdamW steps (loss, lm_loss, aux_loss, expert load, grad norm, parameters), then
// prompt loss and greedy tokens (KV cache) from the trained weights. qwen3_moe-sparse2 and
// deepseek_v3-plain take the other branch of each choice: head_dim from C/NH, attention_bias,
// decoder_sparse_step 2 with mlp_only_layers, top-3, no renormalisation; q_lora_rank null, no
// rope_scaling, rope_interleave false, one group, first_k_dense_replace 0, two shared experts.
import { describe, expect, test } from "bun:test";
import { createCpuKernels } from "../../kernels/index.ts";
import { SafetensorsFile } from "../../checkpoint/safetensors.ts";
import { generate, loadPretrained, promptLoss } from "../../models/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import { FIXTURES, maxAbsDiff, readExpected, singleRow, toMicroBatch } from "./fixtures.ts";
import { tempDir } from "../harness/tmp.ts";

// OpenBLAS: the GEMM Debian's torch made the fixtures with; the step-3 tolerances are calibrated to
// its summation order. oneDNN, the default f32 GEMM where installed, is parity-tested in test/kernels.
const k = createCpuKernels({ threads: 1, f32Gemm: "openblas" });

interface MoeStep { loss: number; lm_loss: number; aux_loss?: number; grad_norm: number; expert_load: number[][] }

for (const name of ["qwen3_moe-tiny", "qwen2_moe-tiny", "deepseek_v3-tiny", "qwen3_moe-sparse2", "deepseek_v3-plain"]) {
  describe(name, () => {
    const dir = `${FIXTURES}${name}`;
    const exp = readExpected(name) as ReturnType<typeof readExpected> & {
      steps: MoeStep[]; infer_after_step3: { prompt: number[]; prompt_loss: number; greedy: number[] };
    };
    const ref = new SafetensorsFile(`${dir}/expected.safetensors`);
    const mbs = exp.micro_batches.map(toMicroBatch);

    for (const ckpt of [false, true]) {
      test(`loss (with the aux term where the family has it) and every parameter gradient match torch${ckpt ? " (activation checkpointing)" : ""}`, async () => {
        const model = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: ckpt });
        const m = model.config.moe!;
        expect(m.outputRouterLogits).toBe(m.auxLoss); // qwen fixtures set it; deepseek has no aux loss
        model.zeroGrads();
        model.routerStats!.resetStep();
        const loss = k.alloc([1]);
        for (const mb of mbs) {
          await model.forward(mb, loss, 1 / exp.global_valid_tokens);
          await model.backward();
        }
        const lm = (await k.read(loss))[0] / exp.global_valid_tokens;
        const aux = model.routerStats!.auxSum;
        expect(Math.abs(lm - exp.steps[0].lm_loss)).toBeLessThan(1e-5);
        expect(Math.abs(aux - (exp.steps[0].aux_loss ?? 0))).toBeLessThan(1e-5);
        expect(Math.abs(lm + m.routerAuxLossCoef * aux - exp.steps[0].loss)).toBeLessThan(1e-5);
        expect(model.routerStats!.load.map((l) => Array.from(l))).toEqual(exp.steps[0].expert_load);
        const worst: [string, number][] = [];
        for (const p of model.layout.byName.keys()) {
          const want = ref.readF32(`grad.${p}`);
          const scale = Math.max(1e-3, ...Array.from(want, Math.abs));
          worst.push([p, maxAbsDiff(await k.read(model.grad(p)), want) / scale]);
        }
        expect(worst.length).toBe(model.layout.byName.size);
        expect(worst.some(([p]) => p.includes("experts.3.down_proj.weight"))).toBe(true);
        if (name === "deepseek_v3-plain") expect(worst.some(([p]) => p.endsWith("self_attn.q_proj.weight"))).toBe(true);
        for (const [p, d] of worst) expect([p, d < 1e-5]).toEqual([p, true]);
      });
    }

    test("logits of both packed rows match torch within 1e-5", async () => {
      const model = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
      for (let i = 0; i < mbs.length; i++) expect(maxAbsDiff(await model.logits(mbs[i]), ref.readF32(`logits.${i}`))).toBeLessThan(1e-5);
    });

    test("three AdamW steps match torch (loss, lm_loss, aux_loss, expert load, grad norm, parameters); then prompt loss and greedy tokens", async () => {
      const model = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
      const trainer = new Trainer(model, {
        schedule: { lr: exp.train.lr, lr_min: 0, lr_start: 0, train_steps: 3, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
        weightDecay: exp.train.weight_decay, maxGradNorm: exp.train.max_grad_norm,
      });
      for (let s = 0; s < 3; s++) {
        const m = await trainer.step(s, mbs);
        const want = exp.steps[s];
        expect(Math.abs(m.loss - want.loss)).toBeLessThan(2e-5);
        expect(Math.abs(m.moe!.lm_loss - want.lm_loss)).toBeLessThan(2e-5);
        if (want.aux_loss === undefined) expect(m.moe!.aux_loss).toBeNull();
        else expect(Math.abs(m.moe!.aux_loss! - want.aux_loss)).toBeLessThan(2e-5);
        expect(m.local.expertLoad).toEqual(want.expert_load);
        expect(Math.abs(m.grad_norm - want.grad_norm) / want.grad_norm).toBeLessThan(1e-5);
      }
      for (const p of model.layout.byName.keys()) {
        const d = maxAbsDiff(await k.read(model.param(p)), ref.readF32(`step3.${p}`));
        expect([p, d < exp.train.lr * 1e-2]).toEqual([p, true]);
      }
      const inf = exp.infer_after_step3;
      const prompt = Int32Array.from(inf.prompt);
      expect(Math.abs(promptLoss(await model.logits(singleRow(inf.prompt)), prompt, model.config.V) - inf.prompt_loss)).toBeLessThan(1e-5);
      const g = await generate(model, prompt, { maxTokens: inf.greedy.length, doSample: false, temperature: 1, topP: 1, seed: 0, eosTokenIds: [] });
      expect(g.generated).toEqual(inf.greedy);
      expect(Math.abs(promptLoss(g.promptLogits, prompt, model.config.V) - inf.prompt_loss)).toBeLessThan(1e-5);
    });
  });
}

test("qwen3_moe with output_router_logits false: aux_loss is still logged (torch's value) but stays out of the objective and the gradient", async () => {
  const { readFileSync, symlinkSync, writeFileSync } = await import("node:fs");
  const dir = tempDir("moe-noaux");
  const cfg = JSON.parse(readFileSync(`${FIXTURES}qwen3_moe-tiny/config.json`, "utf8"));
  writeFileSync(`${dir}/config.json`, JSON.stringify({ ...cfg, output_router_logits: false }));
  symlinkSync(`${FIXTURES}qwen3_moe-tiny/model.safetensors`, `${dir}/model.safetensors`);
  const exp = readExpected("qwen3_moe-tiny") as ReturnType<typeof readExpected> & { steps: MoeStep[] };
  const mbs = exp.micro_batches.map(toMicroBatch);
  const run = async (path: string) => {
    const model = loadPretrained(k, path, { maxTokens: 16, gradientCheckpointing: false });
    const trainer = new Trainer(model, {
      schedule: { lr: exp.train.lr, lr_min: 0, lr_start: 0, train_steps: 1, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
      weightDecay: exp.train.weight_decay, maxGradNorm: exp.train.max_grad_norm,
    });
    const m = await trainer.step(0, mbs);
    return { m, gate: await k.read(model.grad("model.layers.1.mlp.gate.weight")) };
  };
  const off = await run(dir), on = await run(`${FIXTURES}qwen3_moe-tiny`);
  expect(off.m.loss).toBe(off.m.moe!.lm_loss);
  expect(Math.abs(off.m.moe!.lm_loss - exp.steps[0].lm_loss)).toBeLessThan(1e-5);
  expect(Math.abs(off.m.moe!.aux_loss! - exp.steps[0].aux_loss!)).toBeLessThan(1e-5);
  expect(maxAbsDiff(off.gate, on.gate)).toBeGreaterThan(1e-4); // the aux term's gradient reaches the router only when on
});
