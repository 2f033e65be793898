// Fast LM head + cross-entropy (Liger-style chunking), sum of squares and AdamW.
// Cross-entropy never materialises (T,V) logits: valid rows (target != -100) are gathered in
// chunks of R rows; per chunk Z (R,V) = H W^T (sgemm), softmax and loss per row, Z turned into
// dZ = (softmax - onehot) * gradScale in place, then dH = dZ W and dW += dZ^T H (two sgemms).
// Ignored rows cost nothing. Chunk R keeps Z near 64 MiB (R*V floats), so memory is O(R*V), not O(T*V).
// dweight aliasing weight (ops.ts: the gradient replaces the weight): the pass above computes
// the loss and dH and keeps each row's logsumexp; a second pass over blocks of VB vocabulary rows
// recomputes Z_b = H W_b^T, dZ_b = (exp(Z_b - lse) - onehot) * gradScale and dW_b = dZ_b^T H into
// a (VB,C) buffer, written over W_b once every chunk of rows has read it (with one chunk of rows:
// straight into W_b, no buffer).

import type { AdamWParams, ScratchLender } from "../../ops.ts";
import { at, type Native } from "../native/index.ts";
import { fexp } from "./fexp.ts";
import { operandsOf, type Gemm } from "./gemm.ts";

type F32 = Float32Array;
type I32 = Int32Array;

/** Default logits chunk: 2^24 floats = 64 MiB (524 rows at V = 32000; 512 rows ran its sgemms ~10%
 *  faster than 262 and ~20% faster than 128, docs/bench/kernels.md). Small row chunks starve
 *  sgemm (OpenBLAS re-packs W per call and dW's inner dimension is the chunk's row count). */
export const CE_CHUNK_FLOATS = 1 << 24;

export function lossOptimOps(blas: Gemm, native: Native | null, Z_FLOATS = CE_CHUNK_FLOATS) {
  const nv = native?.sym;
  const ops = operandsOf(blas); // slots: 0 W, 1 H chunk, 2 dZ chunk (mixed precision: each cast once)
  let ys = new Int32Array(0);
  let rowLoss = new Float64Array(0);
  let Z: F32 = new Float32Array(0); // this call's logits chunk: borrowed, or ownZ
  let H = new Float32Array(0);
  let dH = new Float32Array(0);
  let rows = new Int32Array(0);
  let lse = new Float64Array(0); // per valid row, for the in-place gradient's second pass
  let dWb = new Float32Array(0);
  const VB = 4096; // vocabulary rows per block of the in-place gradient (a (VB,C) buffer)
  // Z, the (R,V) logits chunk (33 MiB at R 256, V 34000), is borrowed for each call when a plan
  // lends idle memory (Kernels.lendScratch: FSDP's free gather-buffer ranges), else kept here.
  let lender: ScratchLender | null = null;
  let ownZ: F32 = new Float32Array(0);

  function crossEntropyFused(loss: F32, dhidden: F32 | null, dweight: F32 | null, hidden: F32, weight: F32, targets: I32,
    T: number, C: number, V: number, gradScale: number): void {
    let nValid = 0;
    for (let t = 0; t < T; t++) if (targets[t] !== -100) nValid++;
    const R = Math.max(1, Math.min(nValid, Math.floor(Z_FLOATS / V) || 1, 1024));
    const lent = lender?.borrow(R * V) ?? null;
    if (!lent && ownZ.length < R * V) ownZ = new Float32Array(R * V);
    Z = lent ?? ownZ;
    try {
      crossEntropyChunks(loss, dhidden, dweight, hidden, weight, targets, T, C, V, gradScale, R);
    } finally {
      Z = ownZ;
      if (lent) lender!.giveBack(lent);
    }
  }

  /** crossEntropyFused with Z (>= R*V floats) in place. */
  function crossEntropyChunks(loss: F32, dhidden: F32 | null, dweight: F32 | null, hidden: F32, weight: F32, targets: I32,
    T: number, C: number, V: number, gradScale: number, R: number): void {
    const inPlace = dweight !== null && dweight.buffer === weight.buffer && dweight.byteOffset === weight.byteOffset;
    if (inPlace) dweight = null; // first pass: loss and dH only
    if (rows.length < T) rows = new Int32Array(T);
    let nValid = 0;
    for (let t = 0; t < T; t++) if (targets[t] !== -100) rows[nValid++] = t;
    if (H.length < R * C) H = new Float32Array(R * C);
    if (dhidden && dH.length < R * C) dH = new Float32Array(R * C);
    const grads = dhidden !== null || dweight !== null;
    const Wp = ops.prepare(0, weight, 0, V, C, C);
    if (inPlace && lse.length < nValid) lse = new Float64Array(nValid);
    let total = 0;
    for (let c0 = 0; c0 < nValid; c0 += R) {
      const r = Math.min(R, nValid - c0);
      for (let i = 0; i < r; i++) {
        const src = rows[c0 + i] * C, dst = i * C; // gather row (no subarray allocation)
        for (let c = 0; c < C; c++) H[dst + c] = hidden[src + c];
      }
      const Hp = ops.prepare(1, H, 0, r, C, C);
      ops.gemm(false, true, r, V, C, 1, Hp, Wp, 0, Z, 0, V); // Z (r,V) = H W^T
      if (nv) {
        if (ys.length < r) ys = new Int32Array(R), rowLoss = new Float64Array(R);
        for (let i = 0; i < r; i++) ys[i] = targets[rows[c0 + i]];
        if (inPlace) for (let i = 0; i < r; i++) lse[c0 + i] = Z[i * V + ys[i]]; // z_y, before dZ overwrites it
        nv.vt_ce_rows(at(Z), at(ys), r, V, gradScale, grads ? 1 : 0, at(rowLoss));
        for (let i = 0; i < r; i++) total += rowLoss[i];
        if (inPlace) for (let i = 0; i < r; i++) lse[c0 + i] += rowLoss[i]; // lse = loss_row + z_y
      }
      for (let i = 0; !nv && i < r; i++) {
        const o = i * V, y = targets[rows[c0 + i]], zy = Z[o + y];
        let mx = -Infinity;
        for (let v = 0; v < V; v++) if (Z[o + v] > mx) mx = Z[o + v];
        let sum = 0;
        for (let v = 0; v < V; v++) {
          const e = fexp(Z[o + v] - mx); // one exp per logit, kept for the gradient
          Z[o + v] = e;
          sum += e;
        }
        total += mx + Math.log(sum) - zy;
        if (inPlace) lse[c0 + i] = mx + Math.log(sum);
        if (grads) {
          const sc = gradScale / sum; // dZ = softmax * gradScale - onehot * gradScale
          for (let v = 0; v < V; v++) Z[o + v] *= sc;
          Z[o + y] -= gradScale;
        }
      }
      const Zp = grads ? ops.prepare(2, Z, 0, r, V, V) : null;
      if (dhidden) {
        ops.gemm(false, false, r, C, V, 1, Zp!, Wp, 0, dH, 0, C); // dH (r,C) = dZ W
        for (let i = 0; i < r; i++) {
          const d = rows[c0 + i] * C, s = i * C;
          for (let c = 0; c < C; c++) dhidden[d + c] += dH[s + c];
        }
      }
      if (dweight) ops.gemm(true, false, V, C, r, 1, Zp!, Hp, 1, dweight, 0, C); // dW += dZ^T H
    }
    loss[0] += total;
    if (inPlace) weightGradInPlace(weight, hidden, targets, nValid, R, C, V, gradScale);
  }

  /** The second pass of the in-place gradient: weight (V,C) <- dW, block by block (see the header). */
  function weightGradInPlace(weight: F32, hidden: F32, targets: I32, nValid: number, R: number, C: number, V: number, gradScale: number): void {
    const vbMax = Math.min(VB, V);
    // One chunk of rows (nValid <= R, the usual case): W_b is read once, by Z_b's GEMM, before
    // dW_b is accumulated, so dW_b goes straight into W_b's rows (zeroed, then the same beta-1
    // GEMM as into the block buffer: the same values) and the (VB,C) buffer is never allocated
    // (16 MiB at C 1024, issue 17's memory per rank).
    const direct = nValid <= R;
    if (!direct && dWb.length < vbMax * C) dWb = new Float32Array(vbMax * C);
    for (let v0 = 0; v0 < V; v0 += vbMax) {
      const vb = Math.min(vbMax, V - v0);
      const dst = direct ? weight : dWb, dOff = direct ? v0 * C : 0;
      if (!direct) dWb.fill(0, 0, vb * C);
      for (let c0 = 0; c0 < nValid; c0 += R) {
        const r = Math.min(R, nValid - c0);
        for (let i = 0; i < r; i++) {
          const src = rows[c0 + i] * C, dst = i * C;
          for (let c = 0; c < C; c++) H[dst + c] = hidden[src + c];
        }
        const Hp = ops.prepare(1, H, 0, r, C, C);
        ops.gemm(false, true, r, vb, C, 1, Hp, ops.prepare(0, weight, v0 * C, vb, C, C), 0, Z, 0, vb); // Z_b (r,vb) = H W_b^T
        for (let i = 0; i < r; i++) {
          const o = i * vb, l = lse[c0 + i], y = targets[rows[c0 + i]] - v0;
          for (let v = 0; v < vb; v++) Z[o + v] = Math.exp(Z[o + v] - l) * gradScale;
          if (y >= 0 && y < vb) Z[o + y] -= gradScale;
        }
        if (direct) weight.fill(0, v0 * C, (v0 + vb) * C); // W_b was read (Z_b) for the last time
        ops.gemm(true, false, vb, C, r, 1, ops.prepare(2, Z, 0, r, vb, vb), Hp, 1, dst, dOff, C); // dW_b (vb,C) += dZ_b^T H
      }
      if (!direct) weight.set(dWb.subarray(0, vb * C), v0 * C); // W_b is read no more
    }
  }

  function sumSquares(bufs: readonly F32[]): number {
    let total = 0;
    for (const b of bufs) {
      if (nv) {
        total += nv.vt_sumsq(at(b), b.length);
        continue;
      }
      // four independent f64 accumulators, combined in a fixed order
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      const n = b.length, n4 = n & ~3;
      for (let i = 0; i < n4; i += 4) {
        s0 += b[i] * b[i];
        s1 += b[i + 1] * b[i + 1];
        s2 += b[i + 2] * b[i + 2];
        s3 += b[i + 3] * b[i + 3];
      }
      for (let i = n4; i < n; i++) s0 += b[i] * b[i];
      total += s0 + s1 + s2 + s3;
    }
    return total;
  }

  // torch.optim.AdamW step; same algebra as the reference, f64 temporaries, f32 stores.
  function adamw(param: F32, grad: F32, m: F32, v: F32, p: AdamWParams): void {
    if (nv) return nv.vt_adamw(at(param), at(grad), at(m), at(v), param.length, p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step, p.gradScale);
    const b1 = p.beta1, b2 = p.beta2, gs = p.gradScale, eps = p.eps;
    const stepSize = p.lr / (1 - Math.pow(b1, p.step));
    const invBc2Sqrt = 1 / Math.sqrt(1 - Math.pow(b2, p.step));
    const decay = 1 - p.lr * p.weightDecay;
    const n = param.length;
    for (let i = 0; i < n; i++) {
      const g = grad[i] * gs;
      const mi = b1 * m[i] + (1 - b1) * g;
      const vi = b2 * v[i] + (1 - b2) * g * g;
      m[i] = mi;
      v[i] = vi;
      param[i] = param[i] * decay - (stepSize * mi) / (Math.sqrt(vi) * invBc2Sqrt + eps);
    }
  }

  return { crossEntropyFused, sumSquares, adamw, lendScratch: (l: ScratchLender | null) => void (lender = l) };
}
