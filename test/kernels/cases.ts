// Op cases shared by the backend parity tests (fast CPU vs reference: parity.test.ts; WebGPU vs
// reference: webgpu_ops.test.ts). A case runs one op's forward and backward on the Kernels it is
// given and returns the tensors to compare; gradient outputs start non-zero, so += is checked.
// Shapes and seeds are parameters: each backend crosses its own block and tile edges.
import { GROUP_ROWS, ropeCosSin, ropeInvFreq, type GeluKind, type GroupedGemmSpec, type Kernels, type Tensor } from "../../kernels/index.ts";
import { randn, rng, tensorF, tensorI } from "./helpers.ts";

export type Case = (k: Kernels) => Promise<Record<string, Tensor>>;

export const LLAMA3_ROPE = { rope_type: "llama3" as const, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 };

/** out = 0.5 op(a) op(b) + 0.25 out, and out0 = op(a) op(b) over a NaN-filled out (beta = 0). */
export const gemmCase = (M: number, N: number, K: number, ta: boolean, tb: boolean): Case => async (k) => {
  const r = rng(1);
  const out = tensorF(k, [M, N], randn(r, M * N)), out0 = tensorF(k, [M, N], new Float32Array(M * N).fill(NaN));
  const a = tensorF(k, [M * K], randn(r, M * K)), b = tensorF(k, [K * N], randn(r, K * N));
  k.gemm(out, a, b, M, N, K, ta, tb, 0.5, 0.25);
  k.gemm(out0, a, b, M, N, K, ta, tb, 1, 0);
  return { out, out0 };
};

/** Gather and scatter-add with repeated ids. */
export const embeddingCase: Case = async (k) => {
  const r = rng(3), T = 9, C = 5, V = 4;
  const ids = tensorI(k, [0, 3, 3, 1, 0, 2, 3, 3, 1]);
  const table = tensorF(k, [V, C], randn(r, V * C)), out = tensorF(k, [T, C]);
  k.embeddingForward(out, ids, table, T, C, V);
  const dtable = tensorF(k, [V, C], randn(r, V * C));
  k.embeddingBackward(dtable, tensorF(k, [T, C], randn(r, T * C)), ids, T, C, V);
  return { out, dtable };
};

/** Restarting positions; `inPlace`: then the forward again with out = inp. */
/** RoPE forward/backward; `big`: T 600 x 4 heads x HS 40 (past the native loops' vector tails and
 *  parallel threshold), positions restarting per packed sample. */
export const ropeCase = (scaling: typeof LLAMA3_ROPE | null, inPlace = false, big = false): Case => async (k) => {
  const r = rng(5), T = big ? 600 : 7, NH = big ? 4 : 3, HS = big ? 40 : 8, P = big ? 400 : 10;
  const { cos, sin } = ropeCosSin(ropeInvFreq({ dim: HS, theta: 10000, scaling }), P);
  const cosT = tensorF(k, [P, HS / 2], cos), sinT = tensorF(k, [P, HS / 2], sin);
  const pos = tensorI(k, big ? Array.from({ length: T }, (_, t) => (t < 399 ? t : t - 399)) : [0, 1, 2, 3, 0, 1, 9]);
  const inp = tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), out = tensorF(k, [T, NH, HS]);
  k.ropeForward(out, inp, cosT, sinT, pos, T, NH, HS);
  const dinp = tensorF(k, [T, NH, HS], randn(r, T * NH * HS));
  k.ropeBackward(dinp, tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), cosT, sinT, pos, T, NH, HS);
  const res: Record<string, Tensor> = { out, dinp };
  if (inPlace) {
    k.ropeForward(inp, inp, cosT, sinT, pos, T, NH, HS);
    res.inp = inp;
  }
  return res;
};

/** Varlen attention over packed samples (cu: sample boundaries), forward and backward; causal
 *  (decoders) or full within each sample (vision towers). */
export const attnCase = (NH: number, NKV: number, cu: number[], HS: number, seed: number, causal = true): Case => async (k) => {
  const r = rng(seed), T = cu[cu.length - 1]!;
  const q = tensorF(k, [T, NH, HS], randn(r, T * NH * HS, 2)), kk = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS, 2));
  const v = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS)), cuT = tensorI(k, cu);
  const out = tensorF(k, [T, NH, HS]), lse = tensorF(k, [T, NH]);
  k.attentionForward(out, lse, q, kk, v, cuT, T, NH, NKV, HS, 1 / Math.sqrt(HS), causal);
  const dq = tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), dk = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS));
  const dv = tensorF(k, [T, NKV, HS], randn(r, T * NKV * HS));
  k.attentionBackward(dq, dk, dv, tensorF(k, [T, NH, HS], randn(r, T * NH * HS)), q, kk, v, out, lse, cuT, T, NH, NKV, HS, 1 / Math.sqrt(HS), causal);
  return { out, lse, dq, dk, dv };
};

/** LayerNorm forward/backward (rows offset from 0 so the mean matters), then null dweight/dbias. */
export const layernormCase = (N: number, C: number): Case => async (k) => {
  const r = rng(13);
  const x = randn(r, N * C, 3);
  for (let i = 0; i < x.length; i++) x[i] += 1.5;
  const inp = tensorF(k, [N, C], x), w = tensorF(k, [C], randn(r, C)), b = tensorF(k, [C], randn(r, C));
  const out = tensorF(k, [N, C]), mean = tensorF(k, [N]), rstd = tensorF(k, [N]);
  k.layernormForward(out, mean, rstd, inp, w, b, N, C, 1e-6);
  const dout = tensorF(k, [N, C], randn(r, N * C));
  const dinp = tensorF(k, [N, C], randn(r, N * C)), dw = tensorF(k, [C], randn(r, C)), db = tensorF(k, [C], randn(r, C));
  k.layernormBackward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
  const dinp2 = tensorF(k, [N, C]);
  k.layernormBackward(dinp2, null, null, dout, inp, w, mean, rstd, N, C);
  return { out, mean, rstd, dinp, dw, db, dinp2 };
};

/** GELU (exact or quick) over a range crossing the erf series/continued-fraction switch. */
export const geluCase = (N: number, kind: GeluKind): Case => async (k) => {
  const r = rng(14);
  const inp = tensorF(k, [N], randn(r, N, 4)), out = tensorF(k, [N]);
  k.geluForward(out, inp, N, kind);
  const dinp = tensorF(k, [N], randn(r, N));
  k.geluBackward(dinp, tensorF(k, [N], randn(r, N)), inp, N, kind);
  return { out, dinp };
};

export const swigluCase = (N: number): Case => async (k) => {
  const r = rng(7);
  const gate = tensorF(k, [N], randn(r, N, 6)), up = tensorF(k, [N], randn(r, N)), out = tensorF(k, [N]);
  k.swigluForward(out, gate, up, N);
  const dgate = tensorF(k, [N], randn(r, N)), dup = tensorF(k, [N], randn(r, N));
  k.swigluBackward(dgate, dup, tensorF(k, [N], randn(r, N)), gate, up, N);
  return { out, dgate, dup };
};

/** MoE combine: T tokens x K routes into R > T*K rows (some rows unused), a random permutation
 *  as the route indices; backward into non-zero drows / dweights. */
export const moeCombineCase = (T: number, K: number, C: number): Case => async (k) => {
  const r = rng(13), R = T * K + 3;
  const perm = Array.from({ length: R }, (_, i) => i);
  for (let i = R - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const idx = tensorI(k, perm.slice(0, T * K));
  const rows = tensorF(k, [R, C], randn(r, R * C)), w = tensorF(k, [T, K], randn(r, T * K));
  const out = tensorF(k, [T, C], new Float32Array(T * C).fill(NaN)); // overwritten, never read
  k.moeCombine(out, rows, idx, w, T, K, C, R);
  const drows = tensorF(k, [R, C], randn(r, R * C)), dw = tensorF(k, [T, K], randn(r, T * K));
  k.moeCombineBackward(drows, dw, tensorF(k, [T, C], randn(r, T * C)), rows, idx, w, T, K, C, R);
  return { out, drows, dw };
};

/** copyCols: MLA-style head split (nope | rope) with de-interleave (stride 2), a broadcast-like
 *  accumulate, and a plain overwrite, over views with offsets. */
export const copyColsCase = (N: number): Case => async (k) => {
  const r = rng(17);
  const src = tensorF(k, [N, 12], randn(r, N * 12)), dst = tensorF(k, [N, 10], randn(r, N * 10));
  k.copyCols(dst, src, N, 3, 10, 0, 2, 12, 5, 2, false); // dst[:,0,2,4] = src[:,5,7,9]
  k.copyCols(dst, src, N, 3, 10, 1, 3, 12, 6, 2, true); // dst[:,1,4,7] += src[:,6,8,10]
  const part = tensorF(k, [N * 4], randn(r, N * 4));
  k.copyCols(k.view(dst, 0, [N * 10]), part, N, 4, 10, 6, 1, 4, 0, 1, true);
  return { dst };
};

/** Fused LM head + cross-entropy (ignore_index -100 on every fifth token), then the eval form. */
export const crossEntropyCase: Case = async (k) => {
  const r = rng(8), T = 40, C = 12, V = 37;
  const targets = Array.from({ length: T }, (_, t) => (t % 5 === 2 ? -100 : Math.floor(r() * V)));
  const hidden = tensorF(k, [T, C], randn(r, T * C, 2)), w = tensorF(k, [V, C], randn(r, V * C));
  const loss = tensorF(k, [1], new Float32Array([0.5]));
  const dh = tensorF(k, [T, C], randn(r, T * C, 0.01)), dw = tensorF(k, [V, C], randn(r, V * C, 0.01));
  k.crossEntropyFused(loss, dh, dw, hidden, w, tensorI(k, targets), T, C, V, 1 / 32);
  const evalLoss = tensorF(k, [1]);
  k.crossEntropyFused(evalLoss, null, null, hidden, w, tensorI(k, targets), T, C, V, 1);
  return { loss, dh, dw, evalLoss };
};

/** sumSquares over views, then 3 AdamW steps with weight decay and a gradient scale. */
export const adamwCase = (n: number): Case => async (k) => {
  const r = rng(9);
  const p = tensorF(k, [n], randn(r, n)), g = tensorF(k, [n], randn(r, n)), m = tensorF(k, [n]), v = tensorF(k, [n]);
  const ss = tensorF(k, [1]);
  k.sumSquares(ss, [p, g, k.view(g, 10, [5])]);
  for (let step = 1; step <= 3; step++) {
    k.adamw(p, g, m, v, { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, gradScale: 0.7 });
  }
  return { ss, p, m, v };
};

/** Grouped GEMM over expert groups of 3, 0, 20 and 5 rows (an empty group; one crossing 16-row
 *  tiles): the three shapes the grouped SwiGLU experts use (rows x fixed, fixed x rows, a
 *  reduction over rows into per-expert weights, beta 1), every transpose of each, row-block
 *  (R, w) and column-block (w, R) operands, alpha 0.5 / beta 0.25 over non-zero outputs. */
export const groupedGemmCase: Case = async (k) => {
  const r = rng(19), sizes = [3, 0, 20, 5], E = sizes.length, C = 7, W = 18;
  const offs = [0];
  for (const s of sizes) offs.push(offs[offs.length - 1] + s);
  const R = offs[E], most = Math.max(...sizes), off = tensorI(k, offs), n = GROUP_ROWS;
  const row = (w: number) => ({ perExpert: 0, perRow: w, ld: w }), col = { perExpert: 0, perRow: 1, ld: R };
  const wt = (a: number, b: number) => ({ perExpert: a * b, perRow: 0, ld: b });
  const out: Record<string, Tensor> = {};
  const run = (name: string, outN: number, aN: number, bN: number, g: Omit<GroupedGemmSpec, "E" | "alpha" | "beta">, beta: number) => {
    const o = tensorF(k, [outN], randn(r, outN));
    k.groupedGemm(o, tensorF(k, [aN], randn(r, aN)), tensorF(k, [bN], randn(r, bN)), off, most, { ...g, E, alpha: 0.5, beta });
    out[name] = o;
  };
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const t = `${transA ? "T" : "N"}${transB ? "T" : "N"}`;
      run(`rows_x_fixed_${t}`, R * C, R * W, E * W * C, { M: n, N: C, K: W, transA, transB, out: row(C), a: transA ? col : row(W), b: transB ? wt(C, W) : wt(W, C) }, 0.25);
      run(`fixed_x_rows_${t}`, W * R, E * W * C, R * C, { M: W, N: n, K: C, transA, transB, out: col, a: transA ? wt(C, W) : wt(W, C), b: transB ? row(C) : col }, 0);
      run(`reduce_rows_${t}`, E * W * C, R * W, R * C, { M: W, N: C, K: n, transA, transB, out: wt(W, C), a: transA ? row(W) : col, b: transB ? col : row(C) }, 1);
    }
  }
  return out;
};
