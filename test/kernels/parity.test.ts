// Fast CPU path vs the plain reference, through the Kernels contract: forward outputs and
// accumulated gradients of every op. Block sizes are shrunk so multi-block paths (attention key
// blocks with online softmax, cross-entropy row chunks) run on small shapes. Gradient outputs
// start non-zero, so accumulation (+=) is checked too.
import { describe, expect, test } from "bun:test";
import { createCpuKernels, createReferenceKernels, ropeCosSin, ropeInvFreq, type Kernels, type Tensor } from "../../kernels/index.ts";
import { expectClose, randn, rng, tensorF, tensorI } from "./helpers.ts";

const ref = createReferenceKernels();
const fast = createCpuKernels({ threads: 1, tuning: { attnBR: 16, attnBC: 24, ceChunkFloats: 37 * 7 } });
const fastDefault = createCpuKernels({ threads: 1 });

type Case = (k: Kernels) => Promise<Record<string, Tensor<"f32">>>;

async function parity(name: string, run: Case, rtol = 2e-5, atol = 2e-6, k2: Kernels = fast): Promise<void> {
  const a = await run(ref), b = await run(k2);
  expect(Object.keys(b)).toEqual(Object.keys(a));
  for (const key of Object.keys(a)) expectClose(`${name}.${key}`, await k2.read(b[key]), await ref.read(a[key]), rtol, atol);
}

describe("fast CPU path matches the reference", () => {
  test("gemm, all transposes, alpha/beta; beta=0 ignores NaN", async () => {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      await parity(`gemm(${ta},${tb})`, async (k) => {
        const r = rng(1), M = 7, N = 5, K = 9;
        const out = tensorF(k, [M, N], randn(r, M * N)), out0 = tensorF(k, [M, N], new Float32Array(M * N).fill(NaN));
        const a = tensorF(k, [M * K], randn(r, M * K)), b = tensorF(k, [K * N], randn(r, K * N));
        k.gemm(out, a, b, M, N, K, ta, tb, 0.5, 0.25);
        k.gemm(out0, a, b, M, N, K, ta, tb, 1, 0);
        return { out, out0 };
      });
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
    await parity("embedding", async (k) => {
      const r = rng(3), T = 9, C = 5, V = 4;
      const ids = tensorI(k, [0, 3, 3, 1, 0, 2, 3, 3, 1]);
      const table = tensorF(k, [V, C], randn(r, V * C)), out = tensorF(k, [T, C]);
      k.embeddingForward(out, ids, table, T, C, V);
      const dtable = tensorF(k, [V, C], randn(r, V * C));
      k.embeddingBackward(dtable, tensorF(k, [T, C], randn(r, T * C)), ids, T, C, V);
      return { out, dtable };
    });
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
    for (const scaling of [null, { rope_type: "llama3" as const, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 }]) {
      await parity(`rope(${scaling ? "llama3" : "default"})`, async (k) => {
        const r = rng(5), T = 7, NH = 3, HS = 8, P = 10;
        const { cos, sin } = ropeCosSin(ropeInvFreq({ dim: HS, theta: 10000, scaling }), P);
        const cosT = tensorF(k, [P, HS / 2], cos), sinT = tensorF(k, [P, HS / 2], sin);
        const pos = tensorI(k, [0, 1, 2, 3, 0, 1, 9]);
        const inp = tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), out = tensorF(k, [T, NH, HS]);
        k.ropeForward(out, inp, cosT, sinT, pos, T, NH, HS);
        const dinp = tensorF(k, [T, NH, HS], randn(r, T * NH * HS));
        k.ropeBackward(dinp, tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), cosT, sinT, pos, T, NH, HS);
        return { out, dinp };
      });
    }
  });

  const attnCase = (NH: number, NKV: number, cu: number[], HS = 8): Case => async (k) => {
    const r = rng(6 + NH + NKV), T = cu[cu.length - 1];
    const q = tensorF(k, [T, NH, HS], randn(r, T * NH * HS, 2)), kk = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS, 2));
    const v = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS)), cuT = tensorI(k, cu);
    const out = tensorF(k, [T, NH, HS]), lse = tensorF(k, [T, NH]);
    k.attentionForward(out, lse, q, kk, v, cuT, T, NH, NKV, HS, 1 / Math.sqrt(HS));
    const dq = tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), dk = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS));
    const dv = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS));
    k.attentionBackward(dq, dk, dv, tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), q, kk, v, out, lse, cuT, T, NH, NKV, HS, 1 / Math.sqrt(HS));
    return { out, lse, dq, dk, dv };
  };

  test("attention: GQA over packed samples (incl. empty and 1-token), multi-block", async () => {
    await parity("attention(GQA 4/2)", attnCase(4, 2, [0, 37, 38, 38, 90]), 1e-4, 1e-5);
  });
  test("attention: MQA and MHA; default block sizes", async () => {
    await parity("attention(MQA 3/1)", attnCase(3, 1, [0, 50, 61]), 1e-4, 1e-5);
    await parity("attention(MHA 2/2, default blocks)", attnCase(2, 2, [0, 20, 100]), 1e-4, 1e-5, fastDefault);
  });

  test("swiglu forward/backward", async () => {
    await parity("swiglu", async (k) => {
      const r = rng(7), N = 33;
      const gate = tensorF(k, [N], randn(r, N, 6)), up = tensorF(k, [N], randn(r, N)), out = tensorF(k, [N]);
      k.swigluForward(out, gate, up, N);
      const dgate = tensorF(k, [N], randn(r, N)), dup = tensorF(k, [N], randn(r, N));
      k.swigluBackward(dgate, dup, tensorF(k, [N], randn(r, N)), gate, up, N);
      return { out, dgate, dup };
    });
  });

  test("fused LM head + cross-entropy in row chunks, ignore_index -100", async () => {
    await parity("crossEntropyFused", async (k) => {
      const r = rng(8), T = 40, C = 12, V = 37;
      const targets = Array.from({ length: T }, (_, t) => (t % 5 === 2 ? -100 : Math.floor(r() * V)));
      const hidden = tensorF(k, [T, C], randn(r, T * C, 2)), w = tensorF(k, [V, C], randn(r, V * C));
      const loss = tensorF(k, [1], new Float32Array([0.5]));
      const dh = tensorF(k, [T, C], randn(r, T * C, 0.01)), dw = tensorF(k, [V, C], randn(r, V * C, 0.01));
      k.crossEntropyFused(loss, dh, dw, hidden, w, tensorI(k, targets), T, C, V, 1 / 32);
      const evalLoss = tensorF(k, [1]);
      k.crossEntropyFused(evalLoss, null, null, hidden, w, tensorI(k, targets), T, C, V, 1);
      return { loss, dh, dw, evalLoss };
    });
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
    await parity("adamw", async (k) => {
      const r = rng(9), n = 101;
      const p = tensorF(k, [n], randn(r, n)), g = tensorF(k, [n], randn(r, n)), m = tensorF(k, [n]), v = tensorF(k, [n]);
      const ss = tensorF(k, [1]);
      k.sumSquares(ss, [p, g, k.view(g, 10, [5])]);
      for (let step = 1; step <= 3; step++) {
        k.adamw(p, g, m, v, { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, gradScale: 0.7 });
      }
      return { ss, p, m, v };
    }, 1e-5, 1e-7);
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
