// Fast varlen attention (GQA/MQA; causal, or full within each sample) on the CPU, flash style: per sample, per query head,
// query blocks of BR rows against key blocks of up to BC columns. The scores of one block live in
// a scratch (BR,BC) matrix made by sgemm straight from the (T,NH,HS)/(T,NKV,HS) layouts (leading
// dimension NH*HS / NKV*HS, no transposes or copies); softmax is online across key blocks
// (running max m, running sum l, O rescaled); lse = m + log l is saved for backward. Backward
// (FlashAttention-2) recomputes P = exp(S - lse) per block: dV += P^T dO, dP = dO V^T,
// dS = P (dP - D) with D = rowsum(dO * O), dQ += scale dS K, dK += scale dS^T Q.
// All loops run in a fixed order, so results are bit-reproducible.
// With `nativeMode` (the native library built and oneDNN loaded: kernels/cpu/index.ts decides at
// start) the same loop nest runs in C (native/attn.c), threaded over (sample, head) forward and
// (sample, KV head) backward; this TypeScript nest is the fallback and the parity reference.

import { at, type Native } from "../native/index.ts";
import { fexp } from "./fexp.ts";
import type { Gemm } from "./gemm.ts";

type F32 = Float32Array;
type I32 = Int32Array;

/** Default block sizes, chosen by measurement (docs/bench/kernels.md). */
export const ATTN_BR = 64; // query rows per block
export const ATTN_BC = 512; // key columns per block

function checked(status: number, op: string): void {
  if (status !== 0) throw new Error(`kernels/cpu: native ${op} could not allocate its per-thread block scratch (out of memory)`);
}

/** Operands of the native attention's GEMMs: f32, bf16 on oneDNN, or bf16-rounded f32 (native/attn.c's mode 0, 1, 2). */
export type AttnMode = "f32" | "bf16" | "bf16-emulated";
const MODE_CODE: Record<AttnMode, number> = { f32: 0, bf16: 1, "bf16-emulated": 2 };

export function attentionOps(blas: Gemm, native: Native | null, BR = ATTN_BR, BC = ATTN_BC, nativeMode: AttnMode | null = null) {
  const nv = native?.sym;
  const whole = nativeMode !== null ? nv : undefined; // the whole loop nest in C
  const mode = nativeMode !== null ? MODE_CODE[nativeMode] : 0;
  // Scratch, grown on demand and reused: S/P and dP (BR,BC), O accumulator (BR,HS), row stats, D.
  let S = new Float32Array(BR * BC);
  let dP = new Float32Array(BR * BC);
  let O = new Float32Array(0);
  const m = new Float64Array(BR);
  const l = new Float64Array(BR);
  let D = new Float32Array(0);

  /** Keys of block row r (query i0 + r) that count among the block's bc from j0: j <= i when causal. */
  function visible(r: number, bc: number, i0: number, j0: number, causal: boolean): number {
    return causal ? Math.max(0, Math.min(bc, i0 + r - j0 + 1)) : bc;
  }

  /** S <- exp(S - m[r]) for block rows [i0, i0+br) vs keys [j0, j0+bc); masked keys (j > i when causal) -> 0. */
  function expMasked(br: number, bc: number, i0: number, j0: number, causal: boolean): void {
    for (let r = 0; r < br; r++) {
      const lim = visible(r, bc, i0, j0, causal);
      const row = r * bc, mo = m[r];
      for (let c = 0; c < lim; c++) S[row + c] = fexp(S[row + c] - mo);
      S.fill(0, row + lim, row + bc);
    }
  }

  function forward(out: F32, lse: F32, q: F32, k: F32, v: F32, cu: I32, T: number, NH: number, NKV: number, HS: number,
    scale: number, causal: boolean): void {
    if (whole) {
      return checked(whole.vt_attn_fwd(at(out), at(lse), at(q), at(k), at(v), at(cu), cu.length - 1, NH, NKV, HS, scale, causal ? 1 : 0,
        mode, BR, BC), "attentionForward");
    }
    if (O.length < BR * HS) O = new Float32Array(BR * HS);
    const G = NH / NKV, ldq = NH * HS, ldk = NKV * HS;
    for (let s = 0; s + 1 < cu.length; s++) {
      const s0 = cu[s], s1 = cu[s + 1];
      for (let h = 0; h < NH; h++) {
        const g = Math.floor(h / G);
        for (let i0 = s0; i0 < s1; i0 += BR) {
          const br = Math.min(BR, s1 - i0);
          O.fill(0, 0, br * HS);
          m.fill(-Infinity, 0, br);
          l.fill(0, 0, br);
          const jEnd = causal ? i0 + br : s1; // keys of this query block: [s0, jEnd)
          for (let j0 = s0; j0 < jEnd; j0 += BC) {
            const bc = Math.min(BC, jEnd - j0);
            blas.sgemm(false, true, br, bc, HS, scale, q, i0 * ldq + h * HS, ldq, k, j0 * ldk + g * HS, ldk, 0, S, 0, bc);
            if (nv) {
              nv.vt_attn_fwd_block(at(S), at(m), at(l), at(O), br, bc, HS, i0, j0, causal ? 1 : 0);
              blas.sgemm(false, false, br, HS, bc, 1, S, 0, bc, v, j0 * ldk + g * HS, ldk, 1, O, 0, HS);
              continue;
            }
            // online softmax: new row max, rescale running O and l by exp(m_old - m_new)
            for (let r = 0; r < br; r++) {
              const lim = visible(r, bc, i0, j0, causal);
              let mx = m[r];
              for (let c = 0; c < lim; c++) if (S[r * bc + c] > mx) mx = S[r * bc + c];
              const corr = m[r] === -Infinity ? 0 : fexp(m[r] - mx);
              if (corr !== 1) {
                l[r] *= corr;
                for (let d = 0; d < HS; d++) O[r * HS + d] *= corr;
              }
              m[r] = mx;
            }
            expMasked(br, bc, i0, j0, causal);
            for (let r = 0; r < br; r++) {
              let sum = 0;
              for (let c = 0; c < bc; c++) sum += S[r * bc + c];
              l[r] += sum;
            }
            blas.sgemm(false, false, br, HS, bc, 1, S, 0, bc, v, j0 * ldk + g * HS, ldk, 1, O, 0, HS);
          }
          for (let r = 0; r < br; r++) {
            const inv = 1 / l[r], o = (i0 + r) * ldq + h * HS;
            for (let d = 0; d < HS; d++) out[o + d] = O[r * HS + d] * inv;
            lse[(i0 + r) * NH + h] = m[r] + Math.log(l[r]);
          }
        }
      }
    }
  }

  function backward(dq: F32, dk: F32, dv: F32, dout: F32, q: F32, k: F32, v: F32, out: F32, lse: F32, cu: I32,
    T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void {
    const G = NH / NKV, ldq = NH * HS, ldk = NKV * HS;
    if (D.length < T * NH) D = new Float32Array(T * NH);
    if (whole) {
      return checked(whole.vt_attn_bwd(at(dq), at(dk), at(dv), at(dout), at(q), at(k), at(v), at(out), at(lse), at(D), at(cu), cu.length - 1,
        T, NH, NKV, HS, scale, causal ? 1 : 0, mode, BR, BC), "attentionBackward");
    }
    for (let t = 0; t < T * NH; t++) {
      let s = 0;
      for (let d = 0; d < HS; d++) s += dout[t * HS + d] * out[t * HS + d];
      D[t] = s;
    }
    for (let s = 0; s + 1 < cu.length; s++) {
      const s0 = cu[s], s1 = cu[s + 1];
      for (let h = 0; h < NH; h++) {
        const g = Math.floor(h / G);
        for (let i0 = s0; i0 < s1; i0 += BR) {
          const br = Math.min(BR, s1 - i0);
          const qo = i0 * ldq + h * HS;
          for (let r = 0; r < br; r++) m[r] = lse[(i0 + r) * NH + h];
          const jEnd = causal ? i0 + br : s1;
          for (let j0 = s0; j0 < jEnd; j0 += BC) {
            const bc = Math.min(BC, jEnd - j0);
            const ko = j0 * ldk + g * HS;
            blas.sgemm(false, true, br, bc, HS, scale, q, qo, ldq, k, ko, ldk, 0, S, 0, bc);
            if (nv) nv.vt_attn_bwd_block(at(S), at(dP), at(m), at(D), 0, br, bc, i0, j0, causal ? 1 : 0, 0);
            else expMasked(br, bc, i0, j0, causal); // S is now P
            blas.sgemm(true, false, bc, HS, br, 1, S, 0, bc, dout, qo, ldq, 1, dv, ko, ldk); // dV += P^T dO
            blas.sgemm(false, true, br, bc, HS, 1, dout, qo, ldq, v, ko, ldk, 0, dP, 0, bc); // dP = dO V^T
            if (nv) nv.vt_attn_bwd_block(at(S), at(dP), at(m), at(D, i0 * NH + h), NH, br, bc, i0, j0, 0, 1);
            else {
              for (let r = 0; r < br; r++) {
                const Dr = D[(i0 + r) * NH + h], row = r * bc;
                for (let c = 0; c < bc; c++) dP[row + c] = S[row + c] * (dP[row + c] - Dr); // dS
              }
            }
            blas.sgemm(false, false, br, HS, bc, scale, dP, 0, bc, k, ko, ldk, 1, dq, qo, ldq); // dQ += scale dS K
            blas.sgemm(true, false, bc, HS, br, scale, dP, 0, bc, q, qo, ldq, 1, dk, ko, ldk); // dK += scale dS^T Q
          }
        }
      }
    }
  }

  return { attentionForward: forward, attentionBackward: backward };
}
