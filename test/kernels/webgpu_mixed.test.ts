// Mixed precision on WebGPU (kernels/webgpu/mixed.ts): GEMM operands rounded to f16 under a
// per-tensor power-of-two scale, f32 accumulation.
//  - the cast, native shader-f16 conversion and the emulated rounding on f32 bits, equals the
//    TypeScript reference bit for bit (ties, subnormals, the top of the range, inf, NaN, zeros);
//  - the GEMM (every transpose, small and tiled variants) equals the f32 reference GEMM on the
//    reference-cast inputs, within f32 summation order (rtol 1e-5), and is visibly not the f32 GEMM;
//  - 3 training steps of the qwen2-mixed fixture: losses within 1e-2 of torch's bf16 autocast and
//    3e-3 of our CPU mixed (bf16) run (grad norms 2e-2), 1e-3 of the WebGPU f32 run but not equal
//    to it, and native = emulated bit for bit.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { Trainer } from "../../actors/trainer.ts";
import { createCpuKernels, createReferenceKernels, type Kernels } from "../../kernels/index.ts";
import { probeAdapter, Runtime, WebgpuKernels } from "../../kernels/webgpu/index.ts";
import { openGpu } from "../../kernels/webgpu/device.ts";
import { f16CastReference, f16Operands } from "../../kernels/webgpu/mixed.ts";
import { DEFAULT_GPU_TUNING, type GpuTensor, type GpuTuning } from "../../kernels/webgpu/runtime.ts";
import { loadPretrained } from "../../models/index.ts";
import { FIXTURES, toMicroBatch, type Expected } from "../models/fixtures.ts";
import { expectClose, randn, rng, tensorF } from "./helpers.ts";
import { groupedGemmCase } from "./cases.ts";

setDefaultTimeout(120_000); // lavapipe on 2 shared cores
const probe = await probeAdapter();

async function gpuKernels(mixed: boolean, tuning: Partial<GpuTuning> = {}): Promise<WebgpuKernels> {
  return new WebgpuKernels(new Runtime(await openGpu(), { ...DEFAULT_GPU_TUNING, ...tuning }, mixed));
}

if (!probe.ok) {
  test(`webgpu mixed precision: SKIPPED, no adapter: ${probe.reason}`, () => {
    if (probe.nullBackend) throw new Error(probe.reason);
  });
} else {
  const ctx = await openGpu();
  const casts: Array<"native" | "emulated"> = ctx.f16 ? ["native", "emulated"] : ["emulated"];
  console.log(`webgpu mixed precision: adapter shader-f16 ${ctx.f16}; casts tested: ${casts.join(", ")}`);

  describe("f16 operand cast = reference, bit for bit", () => {
    const r = rng(3);
    const tricky = [0, -0, 1, -1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -12, 1 - 2 ** -13, 2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -26,
      65504, 65519, 1e-30, -1e-30, 1e-45, 1.5e-8, 0.1, -0.3333333];
    const cases: Array<[string, Float32Array]> = [
      ["ties, subnormals and the range ends (max 65519)", Float32Array.from(tricky)],
      ["random, max ~1e-6 (scaled up by 2^34)", randn(r, 1000, 1e-6)],
      ["random, max ~3e4 with tiny values", Float32Array.from(randn(r, 700, 1), (v, i) => (i % 7 ? v * 1e-7 : v * 3e4))],
      ["with inf and NaN (passed through; NaN max: scale 1)", Float32Array.from([1.5, Infinity, -(2 ** -20), NaN, 3e5, 1 + 2 ** -11])],
      ["huge (max 3e38)", Float32Array.from([3e38, -1e30, 1, 2 ** -100])],
    ];
    for (const cast of casts) {
      for (const [name, x] of cases) {
        test(`${cast}: ${name}`, async () => {
          const k = await gpuKernels(true, { f16Cast: cast });
          const a = k.alloc([x.length]) as GpuTensor, b = k.alloc([3]) as GpuTensor;
          k.upload(a, x);
          const [ya] = f16Operands(k.rt, a, b);
          const got = await k.read(ya), want = f16CastReference(x);
          for (let i = 0; i < x.length; i++) {
            if (!Object.is(got[i], want[i])) throw new Error(`${cast} ${name}: element ${i} (${x[i]}): got ${got[i]}, want ${want[i]}`);
          }
        });
      }
    }
    test("the reference rounds to f16 spacing (2^-11 relative) and keeps a tiny tensor's precision", () => {
      expect(f16CastReference(Float32Array.from([1 + 2 ** -12, 1 + 3 * 2 ** -12]))).toEqual(Float32Array.from([1, 1 + 2 ** -10]));
      const tiny = Float32Array.from([1e-9, 3.3e-9]); // below f16's smallest subnormal unscaled
      const y = f16CastReference(tiny);
      for (let i = 0; i < 2; i++) expect(Math.abs(y[i] - tiny[i]) / tiny[i]).toBeLessThan(2 ** -11);
    });
  });

  describe("f16-operand GEMM = f32 reference GEMM on cast inputs", () => {
    const ref = createReferenceKernels();
    const shapes: Array<[string, number, number, number, Partial<GpuTuning>]> = [
      ["t16 (software auto) 37x29x45", 37, 29, 45, {}],
      ["t64 tiles 70x130x20", 70, 130, 20, { matmul: "t64" }],
    ];
    for (const cast of casts) {
      for (const [name, M, N, K, tuning] of shapes) {
        test(`${cast} ${name}, every transpose, beta 1`, async () => {
          const k = await gpuKernels(true, { f16Cast: cast, ...tuning });
          const f32 = await gpuKernels(false, tuning);
          const r = rng(M * N + K);
          for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
            const a = randn(r, M * K, 3), b = randn(r, K * N, 1e-3), c0 = randn(r, M * N);
            const run = async (kk: Kernels, x: Float32Array, y: Float32Array) => {
              const out = tensorF(kk, [M, N], c0);
              kk.gemm(out, tensorF(kk, [M * K], x), tensorF(kk, [K * N], y), M, N, K, ta, tb, 0.5, 1);
              return kk.read(out);
            };
            const got = await run(k, a, b);
            const want = await run(ref, f16CastReference(a), f16CastReference(b));
            expectClose(`${cast} ${name} ta=${ta} tb=${tb}`, got, want, 1e-5, 1e-7);
            // and not the f32 GEMM: f16 operands move the result by ~2^-12 relative
            const plain = await run(f32, a, b);
            let d = 0;
            for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - plain[i]) / (1e-3 + Math.abs(plain[i])));
            expect(d).toBeGreaterThan(1e-5);
          }
        });
      }
    }
  });

  test("grouped GEMM (MoE experts) on f16 operands = reference grouped GEMM on cast inputs", async () => {
    // the reference kernels, with each groupedGemm's two operands replaced by their reference cast
    const ref = createReferenceKernels();
    const castRef: Kernels = Object.create(ref);
    castRef.groupedGemm = (out, a, b, off, maxRows, spec) =>
      ref.groupedGemm(out, tensorF(ref, [a.numel], f16CastReference(a.host as Float32Array)), tensorF(ref, [b.numel], f16CastReference(b.host as Float32Array)), off, maxRows, spec);
    for (const cast of casts) {
      const k = await gpuKernels(true, { f16Cast: cast });
      const got = await groupedGemmCase(k), want = await groupedGemmCase(castRef), plain = await groupedGemmCase(ref);
      let moved = 0;
      for (const key of Object.keys(want)) {
        const g = await k.read(got[key]!), w = await ref.read(want[key]!), p = await ref.read(plain[key]!);
        expectClose(`${cast} groupedGemm.${key}`, g, w, 1e-5, 1e-6);
        for (let i = 0; i < g.length; i++) moved = Math.max(moved, Math.abs(g[i] - p[i]) / (1e-3 + Math.abs(p[i])));
      }
      expect(moved).toBeGreaterThan(1e-5); // not the f32 grouped GEMM
    }
  });

  describe("training: 3 AdamW steps of the qwen2-mixed fixture", () => {
    type Steps = { loss: number; grad_norm: number }[];
    const dir = `${FIXTURES}qwen2-mixed`;
    const exp = JSON.parse(readFileSync(`${dir}/expected.json`, "utf8")) as Expected & { autocast_bf16: Steps; f32: Steps; train: { steps: number; lr: number; weight_decay: number; max_grad_norm: number } };
    const mbs = exp.micro_batches.map(toMicroBatch);
    const STEPS = 3; // of the fixture's 5 (lr schedule over all 5): 4 runs of it on lavapipe
    async function losses(k: Kernels): Promise<Steps> {
      const model = loadPretrained(k, dir, { maxTokens: 64, gradientCheckpointing: false });
      const trainer = new Trainer(model, {
        schedule: { lr: exp.train.lr, lr_min: 0, lr_start: 0, train_steps: exp.train.steps, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
        weightDecay: exp.train.weight_decay, maxGradNorm: exp.train.max_grad_norm,
      });
      const out: Steps = [];
      for (let s = 0; s < STEPS; s++) {
        const m = await trainer.step(s, mbs);
        out.push({ loss: m.loss, grad_norm: m.grad_norm });
      }
      return out;
    }
    test(`webgpu mixed (${casts.join(" and ")}) vs torch autocast bf16, cpu mixed and webgpu f32`, async () => {
      const cpuMixed = await losses(createCpuKernels({ threads: 1, mixedPrecision: true }));
      const f32 = await losses(await gpuKernels(false));
      const runs = await Promise.all(casts.map(async (cast) => losses(await gpuKernels(true, { f16Cast: cast }))));
      for (const got of runs) {
        for (let s = 0; s < STEPS; s++) {
          const rel = (x: number, y: number) => Math.abs(x - y) / Math.abs(y);
          expect(rel(got[s].loss, exp.autocast_bf16[s].loss)).toBeLessThan(1e-2);
          expect(rel(got[s].loss, cpuMixed[s].loss)).toBeLessThan(3e-3);
          expect(rel(got[s].grad_norm, cpuMixed[s].grad_norm)).toBeLessThan(2e-2);
          expect(rel(got[s].loss, f32[s].loss)).toBeLessThan(1e-3); // f16 operands: 8x finer than bf16
        }
        const worst = (f: (s: number) => number) => Math.max(...got.map((_, s) => f(s))).toExponential(1);
        console.log(`webgpu mixed vs cpu mixed (bf16): losses ${worst((s) => Math.abs(got[s].loss - cpuMixed[s].loss) / cpuMixed[s].loss)}, ` +
          `grad norms ${worst((s) => Math.abs(got[s].grad_norm - cpuMixed[s].grad_norm) / cpuMixed[s].grad_norm)}; vs webgpu f32: losses ` +
          `${worst((s) => Math.abs(got[s].loss - f32[s].loss) / f32[s].loss)}; vs torch autocast: ${worst((s) => Math.abs(got[s].loss - exp.autocast_bf16[s].loss) / exp.autocast_bf16[s].loss)}`);
        expect(Math.abs(got[0].loss - f32[0].loss) + Math.abs(got[0].grad_norm - f32[0].grad_norm)).toBeGreaterThan(0);
      }
      if (runs.length === 2) {
        for (let s = 0; s < STEPS; s++) {
          expect(runs[0][s].loss).toBe(runs[1][s].loss);
          expect(runs[0][s].grad_norm).toBe(runs[1][s].grad_norm);
        }
      }
    }, 300_000);
  });
}
