// The native loops at sizes that cross their vector tails and parallel thresholds (2 threads
// give the same bits as 1), the bf16 rounding (native = TypeScript = round-to-nearest-even), and
// the mixed-precision GEMMs: bf16-operand GEMMs equal the f32 reference on bf16-rounded inputs,
// and the oneDNN bf16 path agrees with the emulated one within accumulation-order tolerance.
import { describe, expect, test } from "bun:test";
import { bf16Bits, createCpuKernels, createReferenceKernels, hasBf16Units, roundBf16, type Kernels } from "../../kernels/index.ts";
import { loadNative } from "../../kernels/cpu/native/index.ts";
import { parseCpuInfo } from "../../kernels/cpu/fast/cpu_features.ts";
import { existsSync } from "node:fs";
import { adamwCase, attnCase, crossEntropyCase, LLAMA3_ROPE, ropeCase, swigluCase, type Case } from "./cases.ts";
import { expectClose, randn, rng, tensorF, tensorI } from "./helpers.ts";

const ref = createReferenceKernels();
const native = loadNative().native;
const hasDnn = existsSync("/usr/lib/x86_64-linux-gnu/libdnnl.so.2");

async function run(k: Kernels, c: Case): Promise<Record<string, Float32Array>> {
  const out = await c(k);
  const res: Record<string, Float32Array> = {};
  for (const key of Object.keys(out)) res[key] = (await k.read(out[key] as never)) as Float32Array;
  return res;
}

const rmsCase = (N: number, C: number): Case => async (k) => {
  const r = rng(4);
  const inp = tensorF(k, [N, C], randn(r, N * C, 3)), w = tensorF(k, [C], randn(r, C));
  const out = tensorF(k, [N, C]), rstd = tensorF(k, [N]);
  k.rmsnormForward(out, rstd, inp, w, N, C, 1e-6);
  const dinp = tensorF(k, [N, C], randn(r, N * C)), dw = tensorF(k, [C], randn(r, C));
  k.rmsnormBackward(dinp, dw, tensorF(k, [N, C], randn(r, N * C)), inp, w, rstd, N, C);
  return { out, rstd, dinp, dw };
};

const bigCe: Case = async (k) => {
  const r = rng(8), T = 24, C = 16, V = 3001;
  const targets = Array.from({ length: T }, (_, t) => (t % 7 === 3 ? -100 : Math.floor(r() * V)));
  const hidden = tensorF(k, [T, C], randn(r, T * C, 2)), w = tensorF(k, [V, C], randn(r, V * C));
  const loss = tensorF(k, [1]), dh = tensorF(k, [T, C], randn(r, T * C, 0.01)), dw = tensorF(k, [V, C], randn(r, V * C, 0.01));
  k.crossEntropyFused(loss, dh, dw, hidden, w, tensorI(k, targets), T, C, V, 1 / 32);
  return { loss, dh, dw };
};

describe.skipIf(!native)("native element-wise loops (gcc -march=native)", () => {
  const cases: [string, Case, number, number][] = [
    ["swiglu 70001", swigluCase(70001), 2e-5, 2e-6],
    ["rmsnorm 301x257", rmsCase(301, 257), 2e-5, 2e-6],
    ["rope 600x4x40, in place, llama3 table", ropeCase(LLAMA3_ROPE, true, true), 1e-6, 1e-7],
    ["cross-entropy V=3001", bigCe, 2e-5, 2e-6],
    ["adamw 200003", adamwCase(200003), 1e-5, 1e-7],
    ["cross-entropy small", crossEntropyCase, 2e-5, 2e-6],
    // native attention (attn.c, when oneDNN is there): more tasks than threads, empty and 1-token samples
    ["attention GQA 4/2, 5 samples", attnCase(4, 2, [0, 37, 38, 38, 90, 200], 16, 21), 1e-4, 1e-5],
    ["attention full MHA 2/2", attnCase(2, 2, [0, 64, 64, 130], 8, 22, false), 1e-4, 1e-5],
    ["attention MQA 3/1, one sample (fewer tasks than threads)", attnCase(3, 1, [0, 150], 8, 23), 1e-4, 1e-5],
  ];
  for (const [name, c, rtol, atol] of cases) {
    test(`${name}: matches the reference; 2 threads give the bits of 1`, async () => {
      const want = await run(ref, c);
      const one = await run(createCpuKernels({ threads: 1 }), c);
      const two = await run(createCpuKernels({ threads: 2 }), c);
      for (const key of Object.keys(want)) {
        expectClose(`${name}.${key}`, one[key], want[key], rtol, atol);
        expect(Buffer.from(two[key].buffer).equals(Buffer.from(one[key].buffer))).toBe(true);
      }
    });
  }

  test.skipIf(!hasDnn)("attention: the native loop nest is chosen with oneDNN and agrees with the TypeScript blocks", async () => {
    const nat = createCpuKernels({ threads: 2 });
    expect(nat.description).toContain("attention: native flash loops, f32 operands");
    const ts = createCpuKernels({ threads: 1, f32Gemm: "openblas" });
    expect(ts.description).toContain("attention: TypeScript flash blocks");
    const c = attnCase(4, 2, [0, 150, 151, 400, 600], 32, 24);
    const a = await run(ts, c), b = await run(nat, c);
    for (const key of Object.keys(a)) expectClose(`attention.${key}`, b[key], a[key], 1e-4, 1e-5);
  }, 30_000);

  test("bf16 cast: round to nearest even, NaN quiet, same bits as TypeScript", () => {
    const vals = new Float32Array([0, -0, 1, -1, 1.00390625, 1.01171875, 1.005859375, 3.4e38, -3.4e38, Infinity, -Infinity, NaN,
      1e-40, -1e-45, 65504, 0.1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, ...randn(rng(3), 1000, 100)]);
    const out = new Uint16Array(vals.length);
    native!.sym.vt_cast_bf16(vals, 1, vals.length, vals.length, out);
    for (let i = 0; i < vals.length; i++) expect(out[i]).toBe(bf16Bits(vals[i]));
    // and back (a compute copy's f32 storage): the exact bf16 values, NaN kept, past the thread threshold
    const wide = new Float32Array(vals.length);
    native!.sym.vt_widen_bf16(out, out.length, wide);
    for (let i = 0; i < vals.length; i++) expect(Object.is(wide[i], roundBf16(vals[i])) || (Number.isNaN(wide[i]) && Number.isNaN(vals[i]))).toBe(true);
    const big = Uint16Array.from({ length: 200_003 }, (_, i) => (i * 40503) & 0xffff);
    const bw = new Float32Array(big.length);
    native!.sym.vt_widen_bf16(big, big.length, bw);
    const bu = new Uint32Array(bw.buffer);
    for (let i = 0; i < big.length; i++) if (bu[i] !== (big[i] << 16) >>> 0) expect([i, bu[i]]).toEqual([i, (big[i] << 16) >>> 0]);
    // ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1; 1 + 3*2^-8 -> 1 + 2^-6
    expect(roundBf16(1 + 2 ** -8)).toBe(1);
    expect(roundBf16(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6);
    expect(roundBf16(3.4e38)).toBe(Infinity); // rounds past bf16's largest finite value
    expect(Number.isNaN(roundBf16(NaN))).toBe(true);
  });
});

/** out = 0.5 op(a) op(b) + 0.25 out and out0 = op(a) op(b) over NaN; `round`: a and b rounded to
 *  bf16 on the host first (the reference then gives the exact products of the rounded values). */
const gemmBf16Case = (M: number, N: number, K: number, ta: boolean, tb: boolean, round: boolean): Case => async (k) => {
  const r = rng(1), rd = (x: Float32Array) => (round ? x.map(roundBf16) : x);
  const out = tensorF(k, [M, N], randn(r, M * N)), out0 = tensorF(k, [M, N], new Float32Array(M * N).fill(NaN));
  const a = tensorF(k, [M * K], rd(randn(r, M * K))), b = tensorF(k, [K * N], rd(randn(r, K * N)));
  k.gemm(out, a, b, M, N, K, ta, tb, 0.5, 0.25);
  k.gemm(out0, a, b, M, N, K, ta, tb, 1, 0);
  return { out, out0 };
};

describe("mixed precision GEMMs (bf16 operands, f32 accumulation)", () => {
  const shapes: [number, number, number][] = [[7, 5, 9], [33, 70, 129]];
  const modes = [{ name: "emulated", bf16Gemm: "emulated" as const }, ...(hasDnn ? [{ name: "oneDNN", bf16Gemm: "onednn" as const }] : [])];
  for (const mode of modes) {
    test(`${mode.name}: gemm = f32 reference on bf16-rounded inputs, all transposes`, async () => {
      const k = createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: mode.bf16Gemm });
      expect(k.matmulDtype).toBe("bf16");
      for (const [M, N, K] of shapes) {
        for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
          const c = gemmBf16Case(M, N, K, ta, tb, false);
          const want = await run(ref, gemmBf16Case(M, N, K, ta, tb, true));
          const got = await run(k, c); // the backend rounds the operands itself
          for (const key of Object.keys(want)) expectClose(`${mode.name} gemm ${M}x${N}x${K} ${ta},${tb}.${key}`, got[key], want[key], 1e-5, 1e-6);
          // and it is not the f32 product: bf16 rounding is visible at these sizes
          const f32 = await run(ref, c);
          let diff = 0;
          for (let i = 0; i < f32.out0.length; i++) diff = Math.max(diff, Math.abs(f32.out0[i] - got.out0[i]));
          expect(diff).toBeGreaterThan(1e-4);
        }
      }
    });
  }

  test.skipIf(!hasDnn)("oneDNN bf16 and emulated agree within accumulation-order tolerance (linear, LM head + CE)", async () => {
    const emu = createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: "emulated" });
    const dnn = createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: "onednn" });
    const linear: Case = async (k) => {
      const r = rng(2), N = 64, C = 96, OC = 80;
      const inp = tensorF(k, [N, C], randn(r, N * C)), w = tensorF(k, [OC, C], randn(r, OC * C)), b = tensorF(k, [OC], randn(r, OC));
      const out = tensorF(k, [N, OC]);
      k.linearForward(out, inp, w, b, N, C, OC);
      const dinp = tensorF(k, [N, C]), dw = tensorF(k, [OC, C]), db = tensorF(k, [OC]);
      k.linearBackward(dinp, dw, db, tensorF(k, [N, OC], randn(r, N * OC)), inp, w, N, C, OC);
      return { out, dinp, dw, db };
    };
    for (const [name, c] of [["linear", linear], ["cross-entropy", bigCe]] as const) {
      const a = await run(emu, c), b = await run(dnn, c);
      for (const key of Object.keys(a)) expectClose(`${name}.${key}`, b[key], a[key], 1e-5, 1e-5);
    }
  });

  test("attention under mixed precision: bf16 operands in its GEMMs; native oneDNN = native emulated = TypeScript blocks, not f32", async () => {
    const c = attnCase(4, 2, [0, 150, 151, 400, 600], 32, 25);
    const ts = await run(createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: "emulated", f32Gemm: "openblas" }), c);
    const f32 = await run(createCpuKernels({ threads: 1, f32Gemm: "openblas" }), c);
    const paths = [ts];
    if (hasDnn && native) {
      const emu = createCpuKernels({ threads: 2, mixedPrecision: true, bf16Gemm: "emulated" });
      expect(emu.description).toContain("attention: native flash loops, bf16-emulated operands");
      paths.push(await run(emu, c));
      if (hasBf16Units()) {
        const dnn = createCpuKernels({ threads: 2, mixedPrecision: true });
        expect(dnn.description).toContain("attention: native flash loops, bf16 operands");
        paths.push(await run(dnn, c));
      }
    }
    // max |a - b| over max |b|: the paths compute the same bf16 numbers with f32 sums in another
    // order (and another exp in the TypeScript blocks), so a P entry sometimes rounds to the
    // neighbouring bf16 value: measured <= 1.3e-4 apart; the f32 attention is >= 1.2e-3 away
    const rel = (a: Float32Array, b: Float32Array) => {
      let d = 0, sc = 0;
      for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i])), sc = Math.max(sc, Math.abs(b[i]));
      return d / sc;
    };
    for (const key of ["out", "lse", "dq", "dk", "dv"]) {
      for (const p of paths.slice(1)) expect(rel(p[key], ts[key])).toBeLessThan(3e-4);
      expect(rel(f32[key], ts[key])).toBeGreaterThan(8e-4);
    }
  }, 30_000);

  test("backend choice follows the CPU flags", () => {
    expect(hasBf16Units(parseCpuInfo("model name : X\nflags : fpu avx2 avx512f avx512_bf16\n"))).toBe(true);
    expect(hasBf16Units(parseCpuInfo("model name : X\nflags : fpu avx2 amx_bf16 amx_tile\n"))).toBe(true);
    expect(hasBf16Units(parseCpuInfo("model name : X\nflags : fpu avx2 fma\n"))).toBe(false);
    expect(parseCpuInfo("processor : 0\nmodel name : AMD EPYC\nflags : a\nprocessor : 1\n").cpus).toBe(2);
    expect(parseCpuInfo("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n").model).toBe("AMD EPYC, family 26 model 2");
    const k = createCpuKernels({ threads: 1, mixedPrecision: true });
    expect(k.description).toContain(hasDnn && hasBf16Units() ? "oneDNN dnnl_gemm_bf16bf16f32" : "rounded");
  });
});
