// Fast MoE combine: row-at-a-time loops over contiguous (C) rows, f32 accumulation, routes added
// in k order (the same order as the reference, so results are deterministic).

import type { GroupedGemmSpec } from "../../ops.ts";
import { groupDims } from "../reference/moe.ts";
import { scaleOnly, type Gemm } from "./gemm.ts";

type F32 = Float32Array;
type I32 = Int32Array;

// out (T,C) <- sum_k weights[t,k] * rows[idx[t,k]]
export function moeCombine(out: F32, rows: F32, idx: I32, weights: F32, T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    const o = out.subarray(t * C, (t + 1) * C);
    o.fill(0);
    for (let k = 0; k < K; k++) {
      const w = weights[t * K + k];
      const base = idx[t * K + k] * C;
      for (let c = 0; c < C; c++) o[c] += w * rows[base + c];
    }
  }
}

// drows[idx[t,k]] += weights[t,k] * dout[t]; dweights[t,k] += dout[t] . rows[idx[t,k]]
export function moeCombineBackward(drows: F32 | null, dweights: F32 | null, dout: F32, rows: F32, idx: I32, weights: F32,
  T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    const d = t * C;
    for (let k = 0; k < K; k++) {
      const base = idx[t * K + k] * C, w = weights[t * K + k];
      if (dweights) {
        let dot = 0;
        for (let c = 0; c < C; c++) dot += dout[d + c] * rows[base + c];
        dweights[t * K + k] += dot;
      }
      if (drows) for (let c = 0; c < C; c++) drows[base + c] += w * dout[d + c];
    }
  }
}

/** Grouped GEMM: one call of the GEMM (`mm`: f32, or bf16 operands under mixed precision) per
 *  expert group with rows, straight on the operands' strided blocks (no copies). */
export function groupedGemmOp(mm: Gemm): (out: F32, a: F32, b: F32, off: I32, g: GroupedGemmSpec) => void {
  return (out, a, b, off, g) => {
    for (let e = 0; e < g.E; e++) {
      const [M, N, K] = groupDims(g, off[e + 1] - off[e]);
      if (M === 0 || N === 0) continue;
      const co = g.out.perExpert * e + g.out.perRow * off[e];
      if (K === 0) {
        scaleOnly(M, N, g.beta, out, co, g.out.ld);
        continue;
      }
      mm.sgemm(g.transA, g.transB, M, N, K, g.alpha, a, g.a.perExpert * e + g.a.perRow * off[e], g.a.ld,
        b, g.b.perExpert * e + g.b.perRow * off[e], g.b.ld, g.beta, out, co, g.out.ld);
    }
  };
}
