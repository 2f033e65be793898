// Qwen2-VL and Qwen2.5-VL against the plain-torch reference of test/fixtures/make_vl_fixtures.py:
// M-RoPE position ids (get_rope_index per packed sample), the vision tower's output, logits of
// packed rows with images (two images in one row, a two-frame image, a text-only sample, a row
// with no image at all), every parameter gradient, and three AdamW steps with clipping.
import { describe, expect, test } from "bun:test";
import { createCpuKernels } from "../../kernels/index.ts";
import { SafetensorsFile } from "../../checkpoint/safetensors.ts";
import { loadPretrained } from "../../models/index.ts";
import { packedRopeIndex } from "../../models/vl/positions.ts";
import { Trainer } from "../../actors/trainer.ts";
import type { MicroBatch } from "../../data/batch.ts";
import { FIXTURES, maxAbsDiff, readExpected } from "./fixtures.ts";

// OpenBLAS: the GEMM Debian's torch made the fixture with. The step-3 tolerances are calibrated to
// its summation order (Adam turns f32 noise in near-zero gradients into lr-sized steps); oneDNN,
// the default f32 GEMM where installed, sums in another order (parity-tested in test/kernels).
const k = createCpuKernels({ threads: 1, f32Gemm: "openblas" });

interface VlRow {
  input_ids: number[]; labels: number[]; position_ids: number[]; cu_seqlens: number[]; valid_tokens: number;
  image_grid_thw: number[][]; position_ids_3d: number[][];
}

function rows(name: string, ref: SafetensorsFile): MicroBatch[] {
  const exp = readExpected(name) as unknown as { micro_batches: VlRow[] };
  return exp.micro_batches.map((m, i) => ({
    inputIds: Int32Array.from(m.input_ids), labels: Int32Array.from(m.labels), positionIds: Int32Array.from(m.position_ids),
    cuSeqlens: Int32Array.from(m.cu_seqlens), validTokens: m.valid_tokens,
    pixelValues: ref.tensors.has(`pixel_values.${i}`) ? ref.readF32(`pixel_values.${i}`) : null,
    imageGridThw: m.image_grid_thw.length ? Int32Array.from(m.image_grid_thw.flat()) : null,
  }));
}

/** max |a - b| / max(1e-3, max |b|). */
function relDiff(a: ArrayLike<number>, b: Float32Array): number {
  return maxAbsDiff(a, b) / Math.max(1e-3, ...Array.from(b, Math.abs));
}

const OPTS = { maxTokens: 32, gradientCheckpointing: false };

for (const name of ["qwen2-vl-tiny", "qwen2_5-vl-tiny"]) {
  describe(name, () => {
    const dir = `${FIXTURES}${name}`;
    const exp = readExpected(name);
    const ref = new SafetensorsFile(`${dir}/expected.safetensors`);
    const mbs = rows(name, ref);
    const raw = (readExpected(name) as unknown as { micro_batches: VlRow[] }).micro_batches;

    test("M-RoPE position ids equal get_rope_index per packed sample", () => {
      const model = loadPretrained(k, dir, OPTS);
      mbs.forEach((mb, i) => {
        const p = packedRopeIndex(mb.inputIds, mb.cuSeqlens, mb.imageGridThw ?? null, model.config.vision!, model.config.mm!);
        expect([Array.from(p.t), Array.from(p.h), Array.from(p.w)]).toEqual(raw[i].position_ids_3d);
      });
    });

    test("vision tower output matches torch", async () => {
      const model = loadPretrained(k, dir, OPTS);
      let n = 0;
      for (let i = 0; i < mbs.length; i++) {
        if (!mbs[i].pixelValues) continue;
        const out = await model.vision!.forward(model.params, {}, mbs[i].pixelValues!, mbs[i].imageGridThw!);
        expect(relDiff(await k.read(out), ref.readF32(`vision.${i}`))).toBeLessThan(1e-5);
        n++;
      }
      expect(n).toBeGreaterThanOrEqual(2);
    });

    test("logits of every packed row match torch", async () => {
      const model = loadPretrained(k, dir, OPTS);
      for (let i = 0; i < mbs.length; i++) {
        expect([i, relDiff(await model.logits(mbs[i]), ref.readF32(`logits.${i}`)) < 1e-5]).toEqual([i, true]);
      }
    });

    test("loss and every parameter gradient (text and vision) match torch", async () => {
      const model = loadPretrained(k, dir, OPTS);
      model.zeroGrads();
      const loss = k.alloc([1]);
      for (const mb of mbs) {
        await model.forward(mb, loss, 1 / exp.global_valid_tokens);
        await model.backward();
      }
      expect(Math.abs((await k.read(loss))[0] / exp.global_valid_tokens - exp.steps[0].loss)).toBeLessThan(1e-5);
      let nVision = 0;
      for (const p of model.layout.byName.keys()) {
        const d = relDiff(await k.read(model.grad(p)), ref.readF32(`grad.${p}`));
        expect([p, d < 1e-4]).toEqual([p, true]);
        if (p.startsWith("visual.")) nVision++;
      }
      expect(nVision).toBeGreaterThan(10);
    });

    test("three AdamW steps with clipping match torch (loss, grad norm, parameters)", async () => {
      const model = loadPretrained(k, dir, OPTS);
      const trainer = new Trainer(model, {
        schedule: { lr: exp.train.lr, lr_min: 0, lr_start: 0, train_steps: 3, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
        weightDecay: exp.train.weight_decay, maxGradNorm: exp.train.max_grad_norm,
      });
      for (let s = 0; s < 3; s++) {
        const m = await trainer.step(s, mbs);
        expect(Math.abs(m.loss - exp.steps[s].loss)).toBeLessThan(2e-5);
        expect(Math.abs(m.grad_norm - exp.steps[s].grad_norm) / exp.steps[s].grad_norm).toBeLessThan(1e-5);
      }
      // Parameters at 1% of one step (lr), except entries whose step-0 gradient is at f32 noise
      // (|g| < 1e-6): with rope_theta 1e6 the lowest rotary frequencies barely rotate, so k_proj.bias
      // there is almost softmax-invariant and Adam turns the rounding noise into full-lr steps of
      // either sign (bounded by 3 steps of 2 lr).
      let checked = 0;
      for (const p of model.layout.byName.keys()) {
        const got = await k.read(model.param(p)), want = ref.readF32(`step3.${p}`), g0 = ref.readF32(`grad.${p}`);
        let bad = -1;
        for (let j = 0; j < want.length; j++) {
          const tol = Math.abs(g0[j]) < 1e-6 ? 6 * exp.train.lr : exp.train.lr * 1e-2;
          if (!(Math.abs(got[j] - want[j]) < tol)) bad = j;
          else checked++;
        }
        expect([p, bad]).toEqual([p, -1]);
      }
      expect(checked).toBe(model.layout.totalNumel);
    });
  });
}

test("train.vit_lr: the vision units step with their own lr (AdamW's first step moves each entry by ~lr)", async () => {
  const dir = `${FIXTURES}qwen2-vl-tiny`;
  const ref = new SafetensorsFile(`${dir}/expected.safetensors`);
  const mbs = rows("qwen2-vl-tiny", ref);
  const model = loadPretrained(k, dir, OPTS);
  const before = new Map<string, Float32Array>();
  for (const p of model.layout.byName.keys()) before.set(p, await k.read(model.param(p)));
  const lr = 1e-2;
  const trainer = new Trainer(model, {
    schedule: { lr, lr_min: 0, lr_start: 0, train_steps: 1, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
    weightDecay: 0, maxGradNorm: 1, vitLr: lr / 10,
  });
  await trainer.step(0, mbs);
  let vis = 0, text = 0;
  for (const [p, b] of before) {
    const d = maxAbsDiff(await k.read(model.param(p)), b);
    if (p.startsWith("visual.")) vis = Math.max(vis, d);
    else text = Math.max(text, d);
  }
  expect(vis).toBeGreaterThan(0.9e-3);
  expect(vis).toBeLessThan(1.01e-3);
  expect(text).toBeGreaterThan(0.9e-2);
  expect(text).toBeLessThan(1.01e-2);
});
