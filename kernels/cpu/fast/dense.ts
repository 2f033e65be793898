// Fast CPU ops, part 1: matmuls through the chosen GEMM (`mm`: f32, or bf16 operands with f32
// accumulation under mixed precision), and the elementwise/row ops: native loops (native/vec.c)
// when the library built, else single-pass TypeScript loops over typed arrays (no allocation; row
// invariants hoisted; f32 storage, f64 only where a reduction needs it).

import { at, type Native } from "../native/index.ts";
import { fexp } from "./fexp.ts";
import { operandsOf, type Gemm } from "./gemm.ts";

type F32 = Float32Array;
type I32 = Int32Array;

export function denseOps(blas: Gemm, native: Native | null) {
  const nv = native?.sym;
  const ops = operandsOf(blas); // linearBackward's dout serves both GEMMs (slot 0): cast once under mixed precision
  return {
    // out (M,N) <- alpha op(a) @ op(b) + beta out
    gemm(out: F32, a: F32, b: F32, M: number, N: number, K: number, transA: boolean, transB: boolean, alpha: number, beta: number): void {
      blas.sgemm(transA, transB, M, N, K, alpha, a, 0, transA ? M : K, b, 0, transB ? K : N, beta, out, 0, N);
    },

    // out (N,OC) <- inp (N,C) @ W (OC,C)^T + bias: rows pre-filled with the bias, then beta = 1
    linearForward(out: F32, inp: F32, weight: F32, bias: F32 | null, N: number, C: number, OC: number): void {
      if (bias) for (let n = 0; n < N; n++) out.set(bias, n * OC);
      blas.sgemm(false, true, N, OC, C, 1, inp, 0, C, weight, 0, C, bias ? 1 : 0, out, 0, OC);
    },

    // dinp (N,C) += dout (N,OC) @ W (OC,C); dW (OC,C) += dout^T @ inp; dbias += column sums
    linearBackward(dinp: F32 | null, dweight: F32 | null, dbias: F32 | null, dout: F32, inp: F32, weight: F32, N: number, C: number, OC: number): void {
      if (dinp && dweight) {
        const g = ops.prepare(0, dout, 0, N, OC, OC);
        ops.gemm(false, false, N, C, OC, 1, g, ops.prepare(1, weight, 0, OC, C, C), 1, dinp, 0, C);
        ops.gemm(true, false, OC, C, N, 1, g, ops.prepare(1, inp, 0, N, C, C), 1, dweight, 0, C);
      } else if (dinp) blas.sgemm(false, false, N, C, OC, 1, dout, 0, OC, weight, 0, C, 1, dinp, 0, C);
      else if (dweight) blas.sgemm(true, false, OC, C, N, 1, dout, 0, OC, inp, 0, C, 1, dweight, 0, C);
      if (dbias) {
        for (let n = 0; n < N; n++) {
          const r = n * OC;
          for (let o = 0; o < OC; o++) dbias[o] += dout[r + o];
        }
      }
    },

    embeddingForward(out: F32, ids: I32, table: F32, T: number, C: number): void {
      for (let t = 0; t < T; t++) {
        const src = ids[t] * C, dst = t * C;
        for (let c = 0; c < C; c++) out[dst + c] = table[src + c];
      }
    },

    embeddingBackward(dtable: F32, dout: F32, ids: I32, T: number, C: number): void {
      for (let t = 0; t < T; t++) {
        const d = ids[t] * C, s = t * C;
        for (let c = 0; c < C; c++) dtable[d + c] += dout[s + c];
      }
    },

    rmsnormForward(out: F32, rstd: F32, inp: F32, weight: F32, N: number, C: number, eps: number): void {
      if (nv) return nv.vt_rmsnorm_fwd(at(out), at(rstd), at(inp), at(weight), N, C, eps);
      for (let n = 0; n < N; n++) {
        const r0 = n * C;
        let ss = 0;
        for (let c = 0; c < C; c++) {
          const x = inp[r0 + c];
          ss += x * x;
        }
        const r = Math.fround(1 / Math.sqrt(ss / C + eps));
        rstd[n] = r;
        for (let c = 0; c < C; c++) out[r0 + c] = inp[r0 + c] * r * weight[c];
      }
    },

    rmsnormBackward(dinp: F32, dweight: F32 | null, dout: F32, inp: F32, weight: F32, rstd: F32, N: number, C: number): void {
      if (nv) return nv.vt_rmsnorm_bwd(at(dinp), dweight ? at(dweight) : null, at(dout), at(inp), at(weight), at(rstd), N, C);
      for (let n = 0; n < N; n++) {
        const r0 = n * C, r = rstd[n];
        let dot = 0;
        for (let c = 0; c < C; c++) dot += dout[r0 + c] * weight[c] * inp[r0 + c];
        const k = ((r * r * r) / C) * dot;
        for (let c = 0; c < C; c++) dinp[r0 + c] += r * weight[c] * dout[r0 + c] - k * inp[r0 + c];
        if (dweight) for (let c = 0; c < C; c++) dweight[c] += dout[r0 + c] * inp[r0 + c] * r;
      }
    },

    ropeForward(out: F32, inp: F32, cos: F32, sin: F32, positions: I32, T: number, NH: number, HS: number): void {
      if (nv) return nv.vt_rope(at(out), at(inp), at(cos), at(sin), at(positions), T, NH, HS, 0);
      const h2 = HS >> 1;
      for (let t = 0; t < T; t++) {
        const p0 = positions[t] * h2;
        for (let h = 0; h < NH; h++) {
          const b = (t * NH + h) * HS;
          for (let i = 0; i < h2; i++) {
            const c = cos[p0 + i], s = sin[p0 + i];
            const x1 = inp[b + i], x2 = inp[b + i + h2];
            out[b + i] = x1 * c - x2 * s;
            out[b + i + h2] = x2 * c + x1 * s;
          }
        }
      }
    },

    ropeBackward(dinp: F32, dout: F32, cos: F32, sin: F32, positions: I32, T: number, NH: number, HS: number): void {
      if (nv) return nv.vt_rope(at(dinp), at(dout), at(cos), at(sin), at(positions), T, NH, HS, 1);
      const h2 = HS >> 1;
      for (let t = 0; t < T; t++) {
        const p0 = positions[t] * h2;
        for (let h = 0; h < NH; h++) {
          const b = (t * NH + h) * HS;
          for (let i = 0; i < h2; i++) {
            const c = cos[p0 + i], s = sin[p0 + i];
            const g1 = dout[b + i], g2 = dout[b + i + h2];
            dinp[b + i] += g1 * c + g2 * s;
            dinp[b + i + h2] += g2 * c - g1 * s;
          }
        }
      }
    },

    swigluForward(out: F32, gate: F32, up: F32, N: number): void {
      if (nv) return nv.vt_swiglu_fwd(at(out), at(gate), at(up), N);
      for (let i = 0; i < N; i++) {
        const x = gate[i];
        out[i] = (x / (1 + fexp(-x))) * up[i];
      }
    },

    swigluBackward(dgate: F32, dup: F32, dout: F32, gate: F32, up: F32, N: number): void {
      if (nv) return nv.vt_swiglu_bwd(at(dgate), at(dup), at(dout), at(gate), at(up), N);
      for (let i = 0; i < N; i++) {
        const x = gate[i], g = dout[i];
        const sig = 1 / (1 + fexp(-x));
        const silu = x * sig;
        dgate[i] += g * up[i] * (sig + silu * (1 - sig));
        dup[i] += g * silu;
      }
    },
  };
}
