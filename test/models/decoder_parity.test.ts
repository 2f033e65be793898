// Qwen2 (q/k/v bias, GQA, tied) and Qwen3 (qk-norm, explicit head_dim, untied, llama3 RoPE)
// against the plain-torch reference of test/fixtures/make_decoder_fixtures.py: logits, loss, every
// parameter gradient, and three AdamW steps with clipping (llm.c's test_gpt2 in spirit).
import { describe, expect, test } from "bun:test";
import { createKernels } from "../../kernels/index.ts";
import { SafetensorsFile } from "../../checkpoint/safetensors.ts";
import { loadPretrained } from "../../models/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import { FIXTURES, maxAbsDiff, readExpected, toMicroBatch } from "./fixtures.ts";

const k = await createKernels({ backend: "cpu", threads: 1 });

for (const name of ["qwen2-tiny", "qwen3-tiny"]) {
  describe(name, () => {
    const dir = `${FIXTURES}${name}`;
    const exp = readExpected(name);
    const ref = new SafetensorsFile(`${dir}/expected.safetensors`);
    const mbs = exp.micro_batches.map(toMicroBatch);

    test("logits of both packed rows match torch within 1e-5", async () => {
      const model = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
      for (let i = 0; i < mbs.length; i++) {
        const d = maxAbsDiff(await model.logits(mbs[i]), ref.readF32(`logits.${i}`));
        expect(d).toBeLessThan(1e-5);
      }
    });

    test("loss and every parameter gradient match torch", async () => {
      const model = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
      model.zeroGrads();
      const loss = k.alloc([1]);
      for (const mb of mbs) {
        await model.forward(mb, loss, 1 / exp.global_valid_tokens);
        await model.backward();
      }
      expect(Math.abs((await k.read(loss))[0] / exp.global_valid_tokens - exp.steps[0].loss)).toBeLessThan(1e-5);
      const worst: [string, number][] = [];
      for (const p of model.layout.byName.keys()) {
        const want = ref.readF32(`grad.${p}`);
        const scale = Math.max(1e-3, ...Array.from(want, Math.abs));
        worst.push([p, maxAbsDiff(await k.read(model.grad(p)), want) / scale]);
      }
      expect(worst.length).toBe(ref.tensors.size / 2 - mbs.length / 2); // grad.* + step3.* + logits.*
      for (const [p, d] of worst) expect([p, d < 1e-5]).toEqual([p, true]);
    });

    test("three AdamW steps with clipping match torch (loss, grad norm, parameters)", async () => {
      const model = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
      const trainer = new Trainer(model, {
        schedule: { lr: exp.train.lr, lr_min: 0, lr_start: 0, train_steps: 3, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
        weightDecay: exp.train.weight_decay, maxGradNorm: exp.train.max_grad_norm,
      });
      for (let s = 0; s < 3; s++) {
        const m = await trainer.step(s, mbs);
        expect(Math.abs(m.loss - exp.steps[s].loss)).toBeLessThan(2e-5);
        expect(Math.abs(m.grad_norm - exp.steps[s].grad_norm) / exp.steps[s].grad_norm).toBeLessThan(1e-5);
        expect(m.valid_tokens).toBe(exp.global_valid_tokens);
      }
      // Adam divides by sqrt(v): a gradient entry near 1e-7 (qwen2's k_proj.bias has one, RoPE
      // makes that bias almost softmax-invariant) keeps its f32 rounding noise at full lr scale.
      // So parameters are compared at 1% of one step's size (lr), everything else at 1e-5.
      let moved = 0;
      const init = new SafetensorsFile(`${dir}/model.safetensors`);
      for (const p of model.layout.byName.keys()) {
        const d = maxAbsDiff(await k.read(model.param(p)), ref.readF32(`step3.${p}`));
        expect([p, d < exp.train.lr * 1e-2]).toEqual([p, true]);
        moved = Math.max(moved, maxAbsDiff(ref.readF32(`step3.${p}`), init.readF32(p)));
      }
      init.close();
      expect(moved).toBeGreaterThan(0.02); // the parameters did move (3 steps of lr 0.01)
    });
  });
}
