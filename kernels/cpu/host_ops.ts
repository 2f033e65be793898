// The CPU op set over host typed arrays: what the reference (plain loops) and the fast path
// (OpenBLAS + tight loops) each implement. `CpuKernels` (backend.ts) checks tensors at the edge
// and calls one of these, so the reference and fast paths share every check and the same
// argument order as the `Kernels` contract (ops.ts), where the shapes are documented.
// All arrays are exact views (length = the documented element count).

import type { AdamWParams, GeluKind, GroupedGemmSpec, ScratchLender } from "../ops.ts";

type F32 = Float32Array;
type I32 = Int32Array;

export interface HostOps {
  readonly name: string;
  gemm(out: F32, a: F32, b: F32, M: number, N: number, K: number, transA: boolean, transB: boolean, alpha: number, beta: number): void;
  linearForward(out: F32, inp: F32, weight: F32, bias: F32 | null, N: number, C: number, OC: number): void;
  linearBackward(dinp: F32 | null, dweight: F32 | null, dbias: F32 | null, dout: F32, inp: F32, weight: F32, N: number, C: number, OC: number): void;
  embeddingForward(out: F32, ids: I32, table: F32, T: number, C: number): void;
  embeddingBackward(dtable: F32, dout: F32, ids: I32, T: number, C: number): void;
  rmsnormForward(out: F32, rstd: F32, inp: F32, weight: F32, N: number, C: number, eps: number): void;
  rmsnormBackward(dinp: F32, dweight: F32 | null, dout: F32, inp: F32, weight: F32, rstd: F32, N: number, C: number): void;
  /** cos/sin are (P, HS/2); positions already checked < P. */
  ropeForward(out: F32, inp: F32, cos: F32, sin: F32, positions: I32, T: number, NH: number, HS: number): void;
  ropeBackward(dinp: F32, dout: F32, cos: F32, sin: F32, positions: I32, T: number, NH: number, HS: number): void;
  /** cu (S+1) already validated: cu[0]=0, non-decreasing, cu[S]=T. */
  attentionForward(out: F32, lse: F32, q: F32, k: F32, v: F32, cu: I32, T: number, NH: number, NKV: number, HS: number,
    scale: number, causal: boolean): void;
  attentionBackward(dq: F32, dk: F32, dv: F32, dout: F32, q: F32, k: F32, v: F32, out: F32, lse: F32, cu: I32,
    T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void;
  layernormForward(out: F32, mean: F32, rstd: F32, inp: F32, weight: F32, bias: F32, N: number, C: number, eps: number): void;
  layernormBackward(dinp: F32, dweight: F32 | null, dbias: F32 | null, dout: F32, inp: F32, weight: F32,
    mean: F32, rstd: F32, N: number, C: number): void;
  geluForward(out: F32, inp: F32, N: number, kind: GeluKind): void;
  geluBackward(dinp: F32, dout: F32, inp: F32, N: number, kind: GeluKind): void;
  swigluForward(out: F32, gate: F32, up: F32, N: number): void;
  swigluBackward(dgate: F32, dup: F32, dout: F32, gate: F32, up: F32, N: number): void;
  /** ranges already checked. */
  copyCols(dst: F32, src: F32, N: number, width: number, dstW: number, dstOff: number, dstStride: number,
    srcW: number, srcOff: number, srcStride: number, accumulate: boolean): void;
  /** off (E+1) and every group's extent already checked against the arrays (backend.ts). */
  groupedGemm(out: F32, a: F32, b: F32, off: I32, g: GroupedGemmSpec): void;
  /** idx already checked: entries distinct and in [0,R). */
  moeCombine(out: F32, rows: F32, idx: I32, weights: F32, T: number, K: number, C: number): void;
  moeCombineBackward(drows: F32 | null, dweights: F32 | null, dout: F32, rows: F32, idx: I32, weights: F32, T: number, K: number, C: number): void;
  /** targets already checked in [0,V) or -100. loss is (1). dweight may alias weight (ops.ts). */
  crossEntropyFused(loss: F32, dhidden: F32 | null, dweight: F32 | null, hidden: F32, weight: F32, targets: I32,
    T: number, C: number, V: number, gradScale: number): void;
  sumSquares(bufs: readonly F32[]): number;
  adamw(param: F32, grad: F32, m: F32, v: F32, p: AdamWParams): void;
  /** Kernels.lendScratch (ops.ts); absent: the op set has no large scratch (the reference). */
  lendScratch?(lender: ScratchLender | null): void;
}
