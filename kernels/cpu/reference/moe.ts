// Reference MoE combine (the obvious loops, accumulating in f64, routes summed in k order), the
// grouped GEMM of the experts (one plain GEMM loop per expert group), and the strided column copy
// MLA attention splits and joins heads with.
import type { GroupedGemmSpec } from "../../ops.ts";

type F32 = Float32Array;
type I32 = Int32Array;

// out (T,C) <- sum_k weights[t,k] * rows[idx[t,k]]
export function moeCombine(out: F32, rows: F32, idx: I32, weights: F32, T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += weights[t * K + k] * rows[idx[t * K + k] * C + c];
      out[t * C + c] = s;
    }
  }
}

// drows[idx[t,k]] += weights[t,k] * dout[t]; dweights[t,k] += dout[t] . rows[idx[t,k]]
export function moeCombineBackward(drows: F32 | null, dweights: F32 | null, dout: F32, rows: F32, idx: I32, weights: F32,
  T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < K; k++) {
      const r = idx[t * K + k], w = weights[t * K + k];
      let dot = 0;
      for (let c = 0; c < C; c++) {
        dot += dout[t * C + c] * rows[r * C + c];
        if (drows) drows[r * C + c] += w * dout[t * C + c];
      }
      if (dweights) dweights[t * K + k] += dot;
    }
  }
}

// dst[n, dstOff + j*dstStride] (+)= src[n, srcOff + j*srcStride]
export function copyCols(dst: F32, src: F32, N: number, width: number, dstW: number, dstOff: number, dstStride: number,
  srcW: number, srcOff: number, srcStride: number, accumulate: boolean): void {
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < width; j++) {
      const d = n * dstW + dstOff + j * dstStride, v = src[n * srcW + srcOff + j * srcStride];
      dst[d] = accumulate ? dst[d] + v : v;
    }
  }
}

/** Group e's (M,N,K): a fixed size, or GROUP_ROWS (-1) for its row count n. */
export function groupDims(g: GroupedGemmSpec, n: number): [number, number, number] {
  return [g.M < 0 ? n : g.M, g.N < 0 ? n : g.N, g.K < 0 ? n : g.K];
}

// per expert group e (rows off[e]..off[e+1]): out_e (M,N) <- alpha op(a_e) op(b_e) + beta out_e,
// operands at perExpert * e + perRow * off[e] with leading dimension ld (Kernels.groupedGemm)
export function groupedGemm(out: F32, a: F32, b: F32, off: I32, g: GroupedGemmSpec): void {
  for (let e = 0; e < g.E; e++) {
    const [M, N, K] = groupDims(g, off[e + 1] - off[e]);
    const co = g.out.perExpert * e + g.out.perRow * off[e];
    const ao = g.a.perExpert * e + g.a.perRow * off[e];
    const bo = g.b.perExpert * e + g.b.perRow * off[e];
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) {
          const av = g.transA ? a[ao + p * g.a.ld + i] : a[ao + i * g.a.ld + p];
          const bv = g.transB ? b[bo + j * g.b.ld + p] : b[bo + p * g.b.ld + j];
          s += av * bv;
        }
        const at = co + i * g.out.ld + j;
        out[at] = g.alpha * s + (g.beta === 0 ? 0 : g.beta * out[at]);
      }
    }
  }
}
