// Fast CPU path vs the plain reference, through the Kernels contract: forward outputs and
// accumulated gradients of every op. Block sizes are shrunk so multi-block paths (attention key
// blocks with online softmax, cross-entropy row chunks) run on small shapes. Gradient outputs
// start non-zero, so accumulation (+=) is checked too.
import { describe, expect, test } from "bun:test";
import { createCpuKernels, createReferenceKernels, type Kernels } from "../../kernels/index.ts";
import { adamwCase, attnCase, copyColsCase, crossEntropyCase, embeddingCase, gemmCase, geluCase, layernormCase, LLAMA3_ROPE, groupedGemmCase, moeCombineCase, ropeCase, swigluCase, type Case } from "./cases.ts";
import { expectClose, randn, rng, tensorF, tensorI } from "./helpers.ts";

const ref = createReferenceKernels();

// Each variant of the fast path: native loops (gcc) on oneDNN's sgemm where present, and the
// TypeScript loops on OpenBLAS (the fallback on machines without gcc or libdnnl).
const VARIANTS = [
  { name: "native loops, f32 GEMM auto", opts: {} },
  { name: "TypeScript loops, OpenBLAS", opts: { native: false, f32Gemm: "openblas" as const } },
];

for (const variant of VARIANTS) {
const fast = createCpuKernels({ threads: 1, tuning: { attnBR: 16, attnBC: 24, ceChunkFloats: 37 * 7 }, ...variant.opts });
const fastDefault = createCpuKernels({ threads: 1, ...variant.opts });

async function parity(name: string, run: Case, rtol = 2e-5, atol = 2e-6, k2: Kernels = fast): Promise<void> {
  const a = await run(ref), b = await run(k2);
  expect(Object.keys(b)).toEqual(Object.keys(a));
  for (const key of Object.keys(a)) expectClose(`${name}.${key}`, await k2.read(b[key]), await ref.read(a[key]), rtol, atol);
}

describe(`fast CPU path matches the reference (${variant.name})`, () => {
  test("gemm, all transposes, alpha/beta; beta=0 ignores NaN", async () => {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      await parity(`gemm(${ta},${tb})`, gemmCase(7, 5, 9, ta, tb));
    }
  });

  test("linear forward/backward with and without bias", async () => {
    for (const withBias of [true, false]) {
      await parity(`linear(bias=${withBias})`, async (k) => {
        const r = rng(2), N = 6, C = 10, OC = 7;
        const inp = tensorF(k, [N, C], randn(r, N * C)), w = tensorF(k, [OC, C], randn(r, OC * C));
        const b = withBias ? tensorF(k, [OC], randn(r, OC)) : null;
        const out = tensorF(k, [N, OC]);
        k.linearForward(out, inp, w, b, N, C, OC);
        const dout = tensorF(k, [N, OC], randn(r, N * OC));
        const dinp = tensorF(k, [N, C], randn(r, N * C)), dw = tensorF(k, [OC, C], randn(r, OC * C)), db = tensorF(k, [OC], randn(r, OC));
        k.linearBackward(dinp, dw, withBias ? db : null, dout, inp, w, N, C, OC);
        return { out, dinp, dw, db };
      });
    }
  });

  test("embedding gather / scatter-add with repeated ids", async () => {
    await parity("embedding", embeddingCase);
  });

  test("rmsnorm forward/backward", async () => {
    await parity("rmsnorm", async (k) => {
      const r = rng(4), N = 5, C = 16;
      const inp = tensorF(k, [N, C], randn(r, N * C, 3)), w = tensorF(k, [C], randn(r, C));
      const out = tensorF(k, [N, C]), rstd = tensorF(k, [N]);
      k.rmsnormForward(out, rstd, inp, w, N, C, 1e-6);
      const dinp = tensorF(k, [N, C], randn(r, N * C)), dw = tensorF(k, [C], randn(r, C));
      k.rmsnormBackward(dinp, dw, tensorF(k, [N, C], randn(r, N * C)), inp, w, rstd, N, C);
      return { out, rstd, dinp, dw };
    });
  });

  test("rope forward/backward with restarting positions (default and llama3 tables)", async () => {
    for (const scaling of [null, LLAMA3_ROPE]) await parity(`rope(${scaling ? "llama3" : "default"})`, ropeCase(scaling));
  });

  test("attention: GQA over packed samples (incl. empty and 1-token), multi-block", async () => {
    await parity("attention(GQA 4/2)", attnCase(4, 2, [0, 37, 38, 38, 90], 8, 12), 1e-4, 1e-5);
  });
  test("attention: MQA and MHA; default block sizes", async () => {
    await parity("attention(MQA 3/1)", attnCase(3, 1, [0, 50, 61], 8, 10), 1e-4, 1e-5);
    await parity("attention(MHA 2/2, default blocks)", attnCase(2, 2, [0, 20, 100], 8, 10), 1e-4, 1e-5, fastDefault);
  });

  test("attention, full within each sample (vision): empty and 1-token samples, multi-block; GQA and default blocks", async () => {
    await parity("attention(full, GQA 4/2)", attnCase(4, 2, [0, 37, 38, 38, 90], 8, 15, false), 1e-4, 1e-5);
    await parity("attention(full, MHA 2/2, default blocks)", attnCase(2, 2, [0, 64, 64, 100], 8, 16, false), 1e-4, 1e-5, fastDefault);
  });

  test("layernorm forward/backward (dweight/dbias and null)", async () => {
    await parity("layernorm", layernormCase(5, 40));
  });

  test("gelu exact and quick_gelu forward/backward", async () => {
    await parity("gelu", geluCase(301, "gelu"), 1e-6, 1e-7);
    await parity("quick_gelu", geluCase(301, "quick_gelu"), 2e-5, 2e-6);
  });

  test("swiglu forward/backward", async () => {
    await parity("swiglu", swigluCase(33));
  });

  test("copyCols: strided split/join, accumulate and overwrite", async () => {
    await parity("copyCols", copyColsCase(9));
  });

  test("moe combine forward/backward (routes summed in k order)", async () => {
    await parity("moeCombine", moeCombineCase(11, 3, 7));
  });

  test("grouped GEMM over expert groups (an empty one), every transpose, row- and column-block operands", async () => {
    await parity("groupedGemm", groupedGemmCase);
  });

  test("fused LM head + cross-entropy in row chunks, ignore_index -100", async () => {
    await parity("crossEntropyFused", crossEntropyCase);
  });

  test("cross-entropy with every target ignored adds nothing", async () => {
    await parity("crossEntropyFused(all ignored)", async (k) => {
      const r = rng(12), T = 5, C = 4, V = 9;
      const loss = tensorF(k, [1], new Float32Array([1.25])), dh = tensorF(k, [T, C], randn(r, T * C)), dw = tensorF(k, [V, C], randn(r, V * C));
      k.crossEntropyFused(loss, dh, dw, tensorF(k, [T, C], randn(r, T * C)), tensorF(k, [V, C], randn(r, V * C)),
        tensorI(k, new Array(T).fill(-100)), T, C, V, 0.5);
      expect((await k.read(loss))[0]).toBe(1.25);
      return { loss, dh, dw };
    }, 1e-7, 1e-9);
  });

  test("sumSquares and AdamW (3 steps, weight decay, grad scale)", async () => {
    await parity("adamw", adamwCase(101), 1e-5, 1e-7);
  });

  test("elementwise: add, scale, axpy, copy, fill, zero on views", async () => {
    await parity("elementwise", async (k) => {
      const r = rng(10);
      const flat = tensorF(k, [30], randn(r, 30));
      const a = k.view(flat, 0, [10]), b = k.view(flat, 10, [10]), c = k.view(flat, 20, [2, 5]);
      k.add(c, a, b);
      k.scale(a, 3);
      k.axpy(b, -0.5, c);
      const d = tensorF(k, [10]);
      k.copy(d, c);
      k.fill(k.view(c, 3, [2]), 7);
      k.zero(k.view(flat, 0, [2]));
      return { flat, d };
    }, 1e-6, 1e-7);
  });
});
}
