// Finite-difference gradient checks on small shapes, fast CPU backend. For a scalar
// L = sum(Y * R) (R fixed random) each backward's gradients g must satisfy, along a random
// direction d per input, sum(g * d) ~ (L(x + h d) - L(x - h d)) / 2h.
import { describe, expect, test } from "bun:test";
import { createCpuKernels, ropeCosSin, ropeInvFreq, type Kernels, type Tensor } from "../../kernels/index.ts";
import { randn, rng, tensorF, tensorI } from "./helpers.ts";

const k: Kernels = createCpuKernels({ threads: 1 });
type T32 = Tensor<"f32">;

interface Spec {
  inputs: { shape: number[]; scale?: number }[];
  outShape: number[];
  /** Y <- f(inputs) */
  forward(out: T32, xs: T32[]): void;
  /** grads += dY/dx^T dout */
  backward(grads: T32[], dout: T32, xs: T32[], out: T32): void | Promise<void>;
}

async function gradcheck(name: string, s: Spec, seed: number, h = 1e-2, tol = 2e-3): Promise<void> {
  const r = rng(seed);
  const n = (sh: number[]) => sh.reduce((a, b) => a * b, 1);
  const base = s.inputs.map((i) => randn(r, n(i.shape), i.scale ?? 1));
  const dirs = s.inputs.map((i) => randn(r, n(i.shape)));
  const R = randn(r, n(s.outShape));
  const xs = s.inputs.map((i) => tensorF(k, i.shape));
  const out = tensorF(k, s.outShape);
  const L = async (eps: number): Promise<number> => {
    xs.forEach((x, i) => k.upload(x, base[i].map((v, j) => v + eps * dirs[i][j])));
    s.forward(out, xs);
    const y = await k.read(out);
    let l = 0;
    for (let i = 0; i < y.length; i++) l += y[i] * R[i];
    return l;
  };
  const numeric = ((await L(h)) - (await L(-h))) / (2 * h);
  await L(0);
  const grads = s.inputs.map((i) => tensorF(k, i.shape));
  await s.backward(grads, tensorF(k, s.outShape, R), xs, out);
  let analytic = 0;
  for (let i = 0; i < grads.length; i++) {
    const g = await k.read(grads[i]);
    for (let j = 0; j < g.length; j++) analytic += g[j] * dirs[i][j];
  }
  const rel = Math.abs(analytic - numeric) / Math.max(1e-3, Math.abs(numeric));
  if (!(rel < tol)) throw new Error(`${name}: analytic ${analytic} vs numeric ${numeric} (rel ${rel.toExponential(2)})`);
  expect(rel).toBeLessThan(tol);
}

describe("finite-difference gradients (fast CPU)", () => {
  test("linear with bias", async () => {
    const N = 4, C = 6, OC = 5;
    await gradcheck("linear", {
      inputs: [{ shape: [N, C] }, { shape: [OC, C] }, { shape: [OC] }], outShape: [N, OC],
      forward: (o, [x, w, b]) => k.linearForward(o, x, w, b, N, C, OC),
      backward: ([dx, dw, db], d, [x, w]) => k.linearBackward(dx, dw, db, d, x, w, N, C, OC),
    }, 1);
  });

  test("rmsnorm", async () => {
    const N = 3, C = 8, rstd = tensorF(k, [N]);
    await gradcheck("rmsnorm", {
      inputs: [{ shape: [N, C], scale: 2 }, { shape: [C] }], outShape: [N, C],
      forward: (o, [x, w]) => k.rmsnormForward(o, rstd, x, w, N, C, 1e-5),
      backward: ([dx, dw], d, [x, w]) => k.rmsnormBackward(dx, dw, d, x, w, rstd, N, C),
    }, 2);
  });

  test("rope", async () => {
    const T = 4, NH = 2, HS = 8, { cos, sin } = ropeCosSin(ropeInvFreq({ dim: HS, theta: 100 }), 6);
    const c = tensorF(k, [6, HS / 2], cos), s = tensorF(k, [6, HS / 2], sin), pos = tensorI(k, [0, 5, 1, 2]);
    await gradcheck("rope", {
      inputs: [{ shape: [T, NH, HS] }], outShape: [T, NH, HS],
      forward: (o, [x]) => k.ropeForward(o, x, c, s, pos, T, NH, HS),
      backward: ([dx], d) => k.ropeBackward(dx, d, c, s, pos, T, NH, HS),
    }, 3);
  });

  test("attention (GQA, two packed samples)", async () => {
    const NH = 4, NKV = 2, HS = 4, T = 9, cu = tensorI(k, [0, 4, 9]), lse = tensorF(k, [T, NH]), sc = 0.5;
    await gradcheck("attention", {
      inputs: [{ shape: [T, NH, HS] }, { shape: [T, NKV, HS] }, { shape: [T, NKV, HS] }], outShape: [T, NH, HS],
      forward: (o, [q, kk, v]) => k.attentionForward(o, lse, q, kk, v, cu, T, NH, NKV, HS, sc, true),
      backward: ([dq, dk, dv], d, [q, kk, v], o) => k.attentionBackward(dq, dk, dv, d, q, kk, v, o, lse, cu, T, NH, NKV, HS, sc, true),
    }, 4);
  });

  test("attention, full within each sample (vision), with an empty sample", async () => {
    const NH = 2, NKV = 2, HS = 4, T = 9, cu = tensorI(k, [0, 4, 4, 9]), lse = tensorF(k, [T, NH]), sc = 0.5;
    await gradcheck("attention(full)", {
      inputs: [{ shape: [T, NH, HS] }, { shape: [T, NKV, HS] }, { shape: [T, NKV, HS] }], outShape: [T, NH, HS],
      forward: (o, [q, kk, v]) => k.attentionForward(o, lse, q, kk, v, cu, T, NH, NKV, HS, sc, false),
      backward: ([dq, dk, dv], d, [q, kk, v], o) => k.attentionBackward(dq, dk, dv, d, q, kk, v, o, lse, cu, T, NH, NKV, HS, sc, false),
    }, 7);
  });

  test("layernorm (weight and bias)", async () => {
    const N = 3, C = 8, mean = tensorF(k, [N]), rstd = tensorF(k, [N]);
    await gradcheck("layernorm", {
      inputs: [{ shape: [N, C], scale: 2 }, { shape: [C] }, { shape: [C] }], outShape: [N, C],
      forward: (o, [x, w, b]) => k.layernormForward(o, mean, rstd, x, w, b, N, C, 1e-5),
      backward: ([dx, dw, db], d, [x, w]) => k.layernormBackward(dx, dw, db, d, x, w, mean, rstd, N, C),
    }, 8);
  });

  test("gelu (exact) and quick_gelu", async () => {
    const N = 12;
    for (const kind of ["gelu", "quick_gelu"] as const) {
      await gradcheck(kind, {
        inputs: [{ shape: [N], scale: 3 }], outShape: [N],
        forward: (o, [x]) => k.geluForward(o, x, N, kind),
        backward: ([dx], d, [x]) => k.geluBackward(dx, d, x, N, kind),
      }, 9);
    }
  });

  test("swiglu", async () => {
    const N = 10;
    await gradcheck("swiglu", {
      inputs: [{ shape: [N], scale: 3 }, { shape: [N] }], outShape: [N],
      forward: (o, [g, u]) => k.swigluForward(o, g, u, N),
      backward: ([dg, du], d, [g, u]) => k.swigluBackward(dg, du, d, g, u, N),
    }, 5);
  });

  test("moe combine (rows and weights)", async () => {
    const T = 4, K = 2, C = 3, R = 9;
    const idx = tensorI(k, [5, 0, 2, 8, 1, 7, 3, 6]); // row 4 unused
    await gradcheck("moeCombine", {
      inputs: [{ shape: [R, C] }, { shape: [T, K] }], outShape: [T, C],
      forward: (o, [rows, w]) => k.moeCombine(o, rows, idx, w, T, K, C, R),
      backward: ([drows, dw], d, [rows, w]) => k.moeCombineBackward(drows, dw, d, rows, idx, w, T, K, C, R),
    }, 6);
  });

  test("fused LM head cross-entropy (loss as the scalar, grads scaled by R)", async () => {
    const T = 6, C = 5, V = 7, tg = tensorI(k, [1, -100, 6, 0, 3, -100]);
    // out (1) = loss; L = R[0] * loss, so backward uses gradScale = R[0]
    await gradcheck("crossEntropyFused", {
      inputs: [{ shape: [T, C] }, { shape: [V, C] }], outShape: [1],
      forward: (o, [hd, w]) => {
        k.zero(o);
        k.crossEntropyFused(o, null, null, hd, w, tg, T, C, V, 1);
      },
      backward: async ([dh, dw], d, [hd, w]) => {
        const [r0] = await k.read(d);
        k.crossEntropyFused(tensorF(k, [1]), dh, dw, hd, w, tg, T, C, V, r0);
      },
    }, 6);
  });
});
