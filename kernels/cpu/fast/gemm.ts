// The GEMM seam of the fast CPU path. `Gemm` is cblas_sgemm's shape (row-major, element offsets
// and leading dimensions); OpenBLAS (openblas.ts) and oneDNN (onednn.ts) implement it for f32.
// `bf16OperandGemm` is the mixed-precision matmul (PyTorch bf16 autocast / FSDP2
// MixedPrecisionPolicy(param_dtype=bf16) semantics for the GEMM itself): A and B are rounded to
// bf16 (round to nearest even), products accumulate in f32 and C is f32. Where the CPU has bf16
// units and oneDNN is present the operands are cast to bf16 and dnnl_gemm_bf16bf16f32 runs;
// elsewhere they are rounded to bf16 values held in f32 and the f32 GEMM runs. Both give the exact
// products of the same bf16 numbers summed in f32: a run means the same on every machine, up to
// accumulation order.
// Parameters are cast once per unit use, not per call (FSDP2 MixedPrecisionPolicy(param_dtype=
// bf16)): a plan loads a unit's bf16 compute copy with `loadParams` (f32 storage holding bf16
// values, plus the bf16 bits on the oneDNN path) and every GEMM operand that lies inside it is
// taken as it is: oneDNN reads the bits at the same offset and leading dimension, the emulated
// path reads the f32 values (already bf16). Only activations and gradients are cast per call.

import type { Native } from "../native/index.ts";
import { at } from "../native/index.ts";
import type { OneDnn } from "./onednn.ts";

export interface Gemm {
  /** "openblas", "onednn", "bf16(onednn)", "bf16(emulated on openblas)"... for logs. */
  readonly name: string;
  /** C (M,N) <- alpha op(A) @ op(B) + beta C; beta = 0 ignores what C held. */
  sgemm(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Float32Array, aOff: number, lda: number, B: Float32Array, bOff: number, ldb: number,
    beta: number, C: Float32Array, cOff: number, ldc: number): void;
  /** Operands made once for several GEMMs (the bf16 GEMM: each cast once); absent: f32 pass-through. */
  operands?(): Operands;
}

/** A stored matrix ready to be a GEMM operand: f32 data itself, or its bf16 (or bf16-rounded) copy. */
export interface Prepared {
  readonly data: Float32Array | Uint16Array;
  readonly off: number;
  readonly ld: number;
}

/** For an op that uses one matrix in several GEMMs (the LM head's W and dZ, a linear's dout):
 *  `prepare` makes the operand once into `slot` (valid until that slot is prepared again; each
 *  Operands has its own slots), `gemm` multiplies prepared operands (stored shapes as in sgemm). */
export interface Operands {
  prepare(slot: number, src: Float32Array, off: number, rows: number, cols: number, ld: number): Prepared;
  gemm(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number, A: Prepared, B: Prepared,
    beta: number, C: Float32Array, cOff: number, ldc: number): void;
}

/** The Operands of a GEMM: its own (bf16) or the f32 pass-through (no copies). */
export function operandsOf(g: Gemm): Operands {
  if (g.operands) return g.operands();
  return {
    prepare: (_slot, src, off, _rows, _cols, ld) => ({ data: src, off, ld }),
    gemm: (transA, transB, M, N, K, alpha, A, B, beta, C, cOff, ldc) =>
      g.sgemm(transA, transB, M, N, K, alpha, A.data as Float32Array, A.off, A.ld, B.data as Float32Array, B.off, B.ld, beta, C, cOff, ldc),
  };
}

/** C <- beta C (K = 0: the product is empty), without reading C when beta = 0. */
export function scaleOnly(M: number, N: number, beta: number, C: Float32Array, cOff: number, ldc: number): void {
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) C[cOff + i * ldc + j] = beta === 0 ? 0 : beta * C[cOff + i * ldc + j];
}

const u32 = new Uint32Array(1);
const f32 = new Float32Array(u32.buffer);

/** bf16 bits of x, round to nearest even; NaN stays a quiet NaN (vec.c vt_bf16_bits). */
export function bf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** x rounded to the nearest bf16 value, as an f32 number. */
export function roundBf16(x: number): number {
  u32[0] = bf16Bits(x) << 16;
  return f32[0];
}

/** bits (N) <- src (N) rounded to bf16 (round to nearest even), native when loaded. */
export function castBf16(bits: Uint16Array, src: Float32Array, native: Native | null): void {
  if (bits.length !== src.length) throw new Error(`castBf16: ${src.length} f32 values into ${bits.length} bf16 slots`);
  if (native) return native.sym.vt_cast_bf16(at(src), 1, src.length, src.length, at(bits));
  for (let i = 0; i < src.length; i++) bits[i] = bf16Bits(src[i]);
}

/** dst (N) <- the bf16 values `bits` (N) widened to f32 (exact). */
export function widenBf16(dst: Float32Array, bits: Uint16Array, native: Native | null): void {
  if (bits.length !== dst.length) throw new Error(`widenBf16: ${bits.length} bf16 values into ${dst.length} f32 slots`);
  if (native) return native.sym.vt_widen_bf16(at(bits), bits.length, at(dst));
  const d = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < bits.length; i++) d[i] = bits[i] << 16;
}

/** A loaded compute copy: f32 storage of bf16 values and (oneDNN) the same values as bits. */
interface Loaded {
  lo: number; // byte range of `f32` in its buffer
  hi: number;
  bits: Uint16Array | null;
}

/** The mixed-precision GEMM, with the parameters' compute copies it reads without casting. */
export interface Bf16Gemm extends Gemm {
  /** dst <- the bf16 values `bits`; until releaseParams(dst), operands inside dst are not cast again. */
  loadParams(dst: Float32Array, bits: Uint16Array): void;
  releaseParams(dst: Float32Array): void;
  /** Whether loadParams keeps reading `bits` (oneDNN) or only dst (emulated: bits may be reused at once). */
  readonly readsBits: boolean;
}

/** The mixed-precision GEMM over an f32 GEMM (emulated) or oneDNN's bf16 GEMM. */
export function bf16OperandGemm(f32Gemm: Gemm, dnn: OneDnn | null, native: Native | null): Bf16Gemm {
  // Contiguous copies of op(A)'s and op(B)'s stored matrices, grown on demand and reused.
  let a16 = new Uint16Array(0), b16 = new Uint16Array(0);
  let a32 = new Float32Array(0), b32 = new Float32Array(0);
  // compute copies by buffer (a handful at a time: the units in use)
  const loaded = new Map<ArrayBufferLike, Loaded[]>();
  /** The compute copy holding elements [off, off + n) of x, if any. */
  function copyOf(x: Float32Array, off: number, n: number): Loaded | null {
    const l = loaded.get(x.buffer);
    if (!l) return null;
    const lo = x.byteOffset + 4 * off, hi = lo + 4 * n;
    for (const e of l) if (lo >= e.lo && hi <= e.hi) return e;
    return null;
  }

  function cast16(src: Float32Array, off: number, rows: number, cols: number, ld: number, dst: Uint16Array): void {
    if (native) return native.sym.vt_cast_bf16(at(src, off), rows, cols, ld, at(dst));
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[r * cols + c] = bf16Bits(src[off + r * ld + c]);
  }
  function round32(src: Float32Array, off: number, rows: number, cols: number, ld: number, dst: Float32Array): void {
    if (native) return native.sym.vt_round_bf16(at(src, off), rows, cols, ld, at(dst));
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[r * cols + c] = roundBf16(src[off + r * ld + c]);
  }

  function operands(): Operands {
    const slots: (Float32Array | Uint16Array)[] = [];
    return {
      prepare(slot, src, off, rows, cols, ld) {
        const n = rows * cols;
        // a parameter inside a loaded compute copy is bf16 already: no cast, no copy
        const p = loaded.size ? copyOf(src, off, (rows - 1) * ld + cols) : null;
        if (p) return dnn ? { data: p.bits!, off: (src.byteOffset - p.lo) / 4 + off, ld } : { data: src, off, ld };
        let buf = slots[slot];
        if (dnn) {
          if (!(buf instanceof Uint16Array) || buf.length < n) buf = slots[slot] = new Uint16Array(n);
          cast16(src, off, rows, cols, ld, buf as Uint16Array);
        } else {
          if (!(buf instanceof Float32Array) || buf.length < n) buf = slots[slot] = new Float32Array(n);
          round32(src, off, rows, cols, ld, buf as Float32Array);
        }
        return { data: buf, off: 0, ld: cols };
      },
      gemm(transA, transB, M, N, K, alpha, A, B, beta, C, cOff, ldc) {
        if (M === 0 || N === 0) return;
        if (K === 0) return scaleOnly(M, N, beta, C, cOff, ldc);
        if (dnn) dnn.gemmBf16(transA, transB, M, N, K, alpha, A.data as Uint16Array, A.off, A.ld, B.data as Uint16Array, B.off, B.ld, beta, C, cOff, ldc);
        else f32Gemm.sgemm(transA, transB, M, N, K, alpha, A.data as Float32Array, A.off, A.ld, B.data as Float32Array, B.off, B.ld, beta, C, cOff, ldc);
      },
    };
  }

  return {
    operands,
    name: dnn ? "bf16 operands on oneDNN dnnl_gemm_bf16bf16f32" : `bf16 operands rounded, f32 accumulation on ${f32Gemm.name}`,
    readsBits: dnn !== null,
    loadParams(dst, bits) {
      widenBf16(dst, bits, native);
      let l = loaded.get(dst.buffer);
      if (!l) loaded.set(dst.buffer, (l = []));
      if (l.some((e) => e.lo === dst.byteOffset)) throw new Error(`bf16 GEMM: a compute copy is already loaded at byte ${dst.byteOffset} (release it first)`);
      l.push({ lo: dst.byteOffset, hi: dst.byteOffset + dst.byteLength, bits: dnn ? bits : null });
    },
    releaseParams(dst) {
      const l = loaded.get(dst.buffer);
      const i = l?.findIndex((e) => e.lo === dst.byteOffset) ?? -1;
      if (i < 0) return;
      l!.splice(i, 1);
      if (l!.length === 0) loaded.delete(dst.buffer);
    },
    sgemm(transA, transB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) {
      if (M === 0 || N === 0) return;
      if (K === 0) return scaleOnly(M, N, beta, C, cOff, ldc);
      // stored shapes: A is (M,K) or (K,M) when transposed; B is (K,N) or (N,K)
      const ar = transA ? K : M, ac = transA ? M : K, br = transB ? N : K, bc = transB ? K : N;
      // an operand inside a loaded compute copy (a parameter) is already bf16: no cast
      const pa = loaded.size ? copyOf(A, aOff, (ar - 1) * lda + ac) : null;
      const pb = loaded.size ? copyOf(B, bOff, (br - 1) * ldb + bc) : null;
      if (dnn) {
        let Ab: Uint16Array = a16, ao = 0, la = ac, Bb: Uint16Array = b16, bo = 0, lb = bc;
        if (pa) [Ab, ao, la] = [pa.bits!, (A.byteOffset - pa.lo) / 4 + aOff, lda];
        else {
          if (a16.length < ar * ac) Ab = a16 = new Uint16Array(ar * ac);
          cast16(A, aOff, ar, ac, lda, a16);
        }
        if (pb) [Bb, bo, lb] = [pb.bits!, (B.byteOffset - pb.lo) / 4 + bOff, ldb];
        else {
          if (b16.length < br * bc) Bb = b16 = new Uint16Array(br * bc);
          cast16(B, bOff, br, bc, ldb, b16);
        }
        dnn.gemmBf16(transA, transB, M, N, K, alpha, Ab, ao, la, Bb, bo, lb, beta, C, cOff, ldc);
      } else {
        let Af = A, ao = aOff, la = lda, Bf = B, bo = bOff, lb = ldb;
        if (!pa) {
          if (a32.length < ar * ac) a32 = new Float32Array(ar * ac);
          round32(A, aOff, ar, ac, lda, a32);
          [Af, ao, la] = [a32, 0, ac];
        }
        if (!pb) {
          if (b32.length < br * bc) b32 = new Float32Array(br * bc);
          round32(B, bOff, br, bc, ldb, b32);
          [Bf, bo, lb] = [b32, 0, bc];
        }
        f32Gemm.sgemm(transA, transB, M, N, K, alpha, Af, ao, la, Bf, bo, lb, beta, C, cOff, ldc);
      }
    },
  };
}
