// The CPU implementation of the `Kernels` contract. It checks every tensor at the edge (dtype,
// element count, index ranges), then runs one HostOps set on the typed-array views: the
// reference loops (cpu/reference/) or the fast path (cpu/fast/: OpenBLAS sgemm + tight loops).
// Ops execute synchronously inside the call; sync points resolve immediately.

import type { AdamWParams, Bf16Params, GeluKind, GroupedGemmSpec, Kernels, ScratchLender } from "../ops.ts";
import { checkGroups } from "../grouped_gemm_check.ts";
import type { Tensor } from "../tensor.ts";
import type { HostOps } from "./host_ops.ts";
import { CpuMemory, F, I } from "./memory.ts";

type T32 = Tensor<"f32">;

export class CpuKernels extends CpuMemory implements Kernels {
  constructor(
    readonly ops: HostOps,
    readonly description: string,
    /** What matmul operands are rounded to: "bf16" under mixed precision (accumulation stays f32). */
    readonly matmulDtype: "f32" | "bf16" = "f32",
    /** The bf16 GEMM's parameter side (mixed precision), else null. */
    readonly bf16Params: Bf16Params | null = null,
  ) {
    super();
  }

  lendScratch(lender: ScratchLender | null): void {
    this.ops.lendScratch?.(lender);
  }

  gemm(out: T32, a: T32, b: T32, M: number, N: number, K: number, transA: boolean, transB: boolean, alpha: number, beta: number): void {
    this.ops.gemm(F(out, "gemm.out (M,N)", M * N), F(a, "gemm.a", M * K), F(b, "gemm.b", K * N), M, N, K, transA, transB, alpha, beta);
  }

  linearForward(out: T32, inp: T32, weight: T32, bias: T32 | null, N: number, C: number, OC: number): void {
    this.ops.linearForward(F(out, "linearForward.out (N,OC)", N * OC), F(inp, "linearForward.inp (N,C)", N * C),
      F(weight, "linearForward.weight (OC,C)", OC * C), bias ? F(bias, "linearForward.bias (OC)", OC) : null, N, C, OC);
  }

  linearBackward(dinp: T32 | null, dweight: T32 | null, dbias: T32 | null, dout: T32, inp: T32, weight: T32, N: number, C: number, OC: number): void {
    this.ops.linearBackward(dinp ? F(dinp, "linearBackward.dinp (N,C)", N * C) : null,
      dweight ? F(dweight, "linearBackward.dweight (OC,C)", OC * C) : null, dbias ? F(dbias, "linearBackward.dbias (OC)", OC) : null,
      F(dout, "linearBackward.dout (N,OC)", N * OC), F(inp, "linearBackward.inp (N,C)", N * C), F(weight, "linearBackward.weight (OC,C)", OC * C), N, C, OC);
  }

  embeddingForward(out: T32, ids: Tensor<"i32">, table: T32, T: number, C: number, V: number): void {
    const idv = I(ids, "embeddingForward.ids (T)", T);
    checkRange(idv, V, "embeddingForward.ids", false);
    this.ops.embeddingForward(F(out, "embeddingForward.out (T,C)", T * C), idv, F(table, "embeddingForward.table (V,C)", V * C), T, C);
  }

  embeddingBackward(dtable: T32, dout: T32, ids: Tensor<"i32">, T: number, C: number, V: number): void {
    const idv = I(ids, "embeddingBackward.ids (T)", T);
    checkRange(idv, V, "embeddingBackward.ids", false);
    this.ops.embeddingBackward(F(dtable, "embeddingBackward.dtable (V,C)", V * C), F(dout, "embeddingBackward.dout (T,C)", T * C), idv, T, C);
  }

  rmsnormForward(out: T32, rstd: T32, inp: T32, weight: T32, N: number, C: number, eps: number): void {
    this.ops.rmsnormForward(F(out, "rmsnormForward.out (N,C)", N * C), F(rstd, "rmsnormForward.rstd (N)", N),
      F(inp, "rmsnormForward.inp (N,C)", N * C), F(weight, "rmsnormForward.weight (C)", C), N, C, eps);
  }

  rmsnormBackward(dinp: T32, dweight: T32 | null, dout: T32, inp: T32, weight: T32, rstd: T32, N: number, C: number): void {
    this.ops.rmsnormBackward(F(dinp, "rmsnormBackward.dinp (N,C)", N * C), dweight ? F(dweight, "rmsnormBackward.dweight (C)", C) : null,
      F(dout, "rmsnormBackward.dout (N,C)", N * C), F(inp, "rmsnormBackward.inp (N,C)", N * C), F(weight, "rmsnormBackward.weight (C)", C),
      F(rstd, "rmsnormBackward.rstd (N)", N), N, C);
  }

  ropeForward(out: T32, inp: T32, cos: T32, sin: T32, positions: Tensor<"i32">, T: number, NH: number, HS: number): void {
    const [c, s, pos] = this.ropeTables("ropeForward", cos, sin, positions, T, HS);
    this.ops.ropeForward(F(out, "ropeForward.out (T,NH,HS)", T * NH * HS), F(inp, "ropeForward.inp (T,NH,HS)", T * NH * HS), c, s, pos, T, NH, HS);
  }

  ropeBackward(dinp: T32, dout: T32, cos: T32, sin: T32, positions: Tensor<"i32">, T: number, NH: number, HS: number): void {
    const [c, s, pos] = this.ropeTables("ropeBackward", cos, sin, positions, T, HS);
    this.ops.ropeBackward(F(dinp, "ropeBackward.dinp (T,NH,HS)", T * NH * HS), F(dout, "ropeBackward.dout (T,NH,HS)", T * NH * HS), c, s, pos, T, NH, HS);
  }

  private ropeTables(op: string, cos: T32, sin: T32, positions: Tensor<"i32">, T: number, HS: number): [Float32Array, Float32Array, Int32Array] {
    if (HS % 2 !== 0) throw new Error(`${op}: head size HS=${HS} must be even`);
    const h2 = HS / 2;
    if (cos.numel % h2 !== 0) throw new Error(`${op}: cos table has ${cos.numel} elements, not a multiple of HS/2=${h2}`);
    const P = cos.numel / h2;
    const c = F(cos, `${op}.cos (P,HS/2)`, P * h2), s = F(sin, `${op}.sin (P,HS/2)`, P * h2);
    const pos = I(positions, `${op}.positions (T)`, T);
    checkRange(pos, P, `${op}.positions (rope table has P=${P} positions)`, false);
    return [c, s, pos];
  }

  layernormForward(out: T32, mean: T32, rstd: T32, inp: T32, weight: T32, bias: T32, N: number, C: number, eps: number): void {
    this.ops.layernormForward(F(out, "layernormForward.out (N,C)", N * C), F(mean, "layernormForward.mean (N)", N),
      F(rstd, "layernormForward.rstd (N)", N), F(inp, "layernormForward.inp (N,C)", N * C), F(weight, "layernormForward.weight (C)", C),
      F(bias, "layernormForward.bias (C)", C), N, C, eps);
  }

  layernormBackward(dinp: T32, dweight: T32 | null, dbias: T32 | null, dout: T32, inp: T32, weight: T32, mean: T32, rstd: T32, N: number, C: number): void {
    this.ops.layernormBackward(F(dinp, "layernormBackward.dinp (N,C)", N * C), dweight ? F(dweight, "layernormBackward.dweight (C)", C) : null,
      dbias ? F(dbias, "layernormBackward.dbias (C)", C) : null, F(dout, "layernormBackward.dout (N,C)", N * C),
      F(inp, "layernormBackward.inp (N,C)", N * C), F(weight, "layernormBackward.weight (C)", C), F(mean, "layernormBackward.mean (N)", N),
      F(rstd, "layernormBackward.rstd (N)", N), N, C);
  }

  geluForward(out: T32, inp: T32, N: number, kind: GeluKind): void {
    checkGelu("geluForward", kind);
    this.ops.geluForward(F(out, "geluForward.out (N)", N), F(inp, "geluForward.inp (N)", N), N, kind);
  }

  geluBackward(dinp: T32, dout: T32, inp: T32, N: number, kind: GeluKind): void {
    checkGelu("geluBackward", kind);
    this.ops.geluBackward(F(dinp, "geluBackward.dinp (N)", N), F(dout, "geluBackward.dout (N)", N), F(inp, "geluBackward.inp (N)", N), N, kind);
  }

  attentionForward(out: T32, lse: T32, q: T32, k: T32, v: T32, cuSeqlens: Tensor<"i32">, T: number, NH: number, NKV: number, HS: number,
    scale: number, causal: boolean): void {
    const cu = checkAttention("attentionForward", cuSeqlens, T, NH, NKV);
    this.ops.attentionForward(F(out, "attentionForward.out (T,NH,HS)", T * NH * HS), F(lse, "attentionForward.lse (T,NH)", T * NH),
      F(q, "attentionForward.q (T,NH,HS)", T * NH * HS), F(k, "attentionForward.k (T,NKV,HS)", T * NKV * HS),
      F(v, "attentionForward.v (T,NKV,HS)", T * NKV * HS), cu, T, NH, NKV, HS, scale, causal);
  }

  attentionBackward(dq: T32, dk: T32, dv: T32, dout: T32, q: T32, k: T32, v: T32, out: T32, lse: T32, cuSeqlens: Tensor<"i32">,
    T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void {
    const cu = checkAttention("attentionBackward", cuSeqlens, T, NH, NKV);
    const nq = T * NH * HS, nk = T * NKV * HS;
    this.ops.attentionBackward(F(dq, "attentionBackward.dq (T,NH,HS)", nq), F(dk, "attentionBackward.dk (T,NKV,HS)", nk),
      F(dv, "attentionBackward.dv (T,NKV,HS)", nk), F(dout, "attentionBackward.dout (T,NH,HS)", nq), F(q, "attentionBackward.q (T,NH,HS)", nq),
      F(k, "attentionBackward.k (T,NKV,HS)", nk), F(v, "attentionBackward.v (T,NKV,HS)", nk), F(out, "attentionBackward.out (T,NH,HS)", nq),
      F(lse, "attentionBackward.lse (T,NH)", T * NH), cu, T, NH, NKV, HS, scale, causal);
  }

  swigluForward(out: T32, gate: T32, up: T32, N: number): void {
    this.ops.swigluForward(F(out, "swigluForward.out (N)", N), F(gate, "swigluForward.gate (N)", N), F(up, "swigluForward.up (N)", N), N);
  }

  swigluBackward(dgate: T32, dup: T32, dout: T32, gate: T32, up: T32, N: number): void {
    this.ops.swigluBackward(F(dgate, "swigluBackward.dgate (N)", N), F(dup, "swigluBackward.dup (N)", N), F(dout, "swigluBackward.dout (N)", N),
      F(gate, "swigluBackward.gate (N)", N), F(up, "swigluBackward.up (N)", N), N);
  }

  copyCols(dst: T32, src: T32, N: number, width: number, dstW: number, dstOff: number, dstStride: number,
    srcW: number, srcOff: number, srcStride: number, accumulate: boolean): void {
    const span = (w: number, off: number, stride: number, what: string) => {
      if (!(stride >= 1) || off < 0 || (width > 0 && off + (width - 1) * stride >= w)) {
        throw new Error(`copyCols.${what}: columns ${off} + (width ${width} - 1) * stride ${stride} do not fit a row of ${w}`);
      }
    };
    span(dstW, dstOff, dstStride, "dst");
    span(srcW, srcOff, srcStride, "src");
    this.ops.copyCols(F(dst, "copyCols.dst (N,dstW)", N * dstW), F(src, "copyCols.src (N,srcW)", N * srcW), N, width,
      dstW, dstOff, dstStride, srcW, srcOff, srcStride, accumulate);
  }

  groupedGemm(out: T32, a: T32, b: T32, off: Tensor<"i32">, maxRows: number, g: GroupedGemmSpec): void {
    const o = I(off, "groupedGemm.off (E+1)", g.E + 1);
    checkGroups(o, maxRows, g, { out: out.numel, a: a.numel, b: b.numel });
    this.ops.groupedGemm(F(out, "groupedGemm.out", out.numel), F(a, "groupedGemm.a", a.numel), F(b, "groupedGemm.b", b.numel), o, g);
  }

  moeCombine(out: T32, rows: T32, idx: Tensor<"i32">, weights: T32, T: number, K: number, C: number, R: number): void {
    const ix = checkRoutes("moeCombine", idx, T, K, R);
    this.ops.moeCombine(F(out, "moeCombine.out (T,C)", T * C), F(rows, "moeCombine.rows (R,C)", R * C), ix,
      F(weights, "moeCombine.weights (T,K)", T * K), T, K, C);
  }

  moeCombineBackward(drows: T32 | null, dweights: T32 | null, dout: T32, rows: T32, idx: Tensor<"i32">, weights: T32,
    T: number, K: number, C: number, R: number): void {
    const ix = checkRoutes("moeCombineBackward", idx, T, K, R);
    this.ops.moeCombineBackward(drows ? F(drows, "moeCombineBackward.drows (R,C)", R * C) : null,
      dweights ? F(dweights, "moeCombineBackward.dweights (T,K)", T * K) : null, F(dout, "moeCombineBackward.dout (T,C)", T * C),
      F(rows, "moeCombineBackward.rows (R,C)", R * C), ix, F(weights, "moeCombineBackward.weights (T,K)", T * K), T, K, C);
  }

  crossEntropyFused(loss: T32, dhidden: T32 | null, dweight: T32 | null, hidden: T32, weight: T32, targets: Tensor<"i32">,
    T: number, C: number, V: number, gradScale: number): void {
    const tg = I(targets, "crossEntropyFused.targets (T)", T);
    checkRange(tg, V, "crossEntropyFused.targets", true);
    this.ops.crossEntropyFused(F(loss, "crossEntropyFused.loss (1)", 1), dhidden ? F(dhidden, "crossEntropyFused.dhidden (T,C)", T * C) : null,
      dweight ? F(dweight, "crossEntropyFused.dweight (V,C)", V * C) : null, F(hidden, "crossEntropyFused.hidden (T,C)", T * C),
      F(weight, "crossEntropyFused.weight (V,C)", V * C), tg, T, C, V, gradScale);
  }

  sumSquares(out: T32, bufs: readonly T32[]): void {
    const o = F(out, "sumSquares.out (1)", 1);
    o[0] = this.ops.sumSquares(bufs.map((b, i) => F(b, `sumSquares.bufs[${i}]`, b.numel)));
  }

  adamw(param: T32, grad: T32, m: T32, v: T32, p: AdamWParams): void {
    const n = param.numel;
    if (!(p.step >= 1)) throw new Error(`adamw: step must be >= 1 (1-based), got ${p.step}`);
    this.ops.adamw(F(param, "adamw.param", n), F(grad, "adamw.grad", n), F(m, "adamw.m", n), F(v, "adamw.v", n), p);
  }
}

function checkGelu(op: string, kind: GeluKind): void {
  if (kind !== "gelu" && kind !== "quick_gelu") throw new Error(`${op}: kind must be "gelu" or "quick_gelu", got ${JSON.stringify(kind)}`);
}

/** Every value in [0, n) (or -100 when allowIgnore); throws naming the first bad index. */
function checkRange(a: Int32Array, n: number, what: string, allowIgnore: boolean): void {
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    if ((x < 0 || x >= n) && !(allowIgnore && x === -100)) {
      throw new Error(`${what}[${i}] = ${x} is outside [0, ${n})${allowIgnore ? " and not -100" : ""}`);
    }
  }
}

/** MoE route indices (T,K): in [0,R) and distinct (the backward scatters into rows without races). */
function checkRoutes(op: string, idx: Tensor<"i32">, T: number, K: number, R: number): Int32Array {
  const ix = I(idx, `${op}.idx (T,K)`, T * K);
  checkRange(ix, R, `${op}.idx`, false);
  const seen = new Uint8Array(R);
  for (let i = 0; i < ix.length; i++) {
    if (seen[ix[i]]) throw new Error(`${op}.idx[${i}] = ${ix[i]} repeats an earlier route (each row belongs to one (token, route))`);
    seen[ix[i]] = 1;
  }
  return ix;
}

function checkAttention(op: string, cuSeqlens: Tensor<"i32">, T: number, NH: number, NKV: number): Int32Array {
  if (NKV <= 0 || NH % NKV !== 0) throw new Error(`${op}: NH=${NH} must be a multiple of NKV=${NKV}`);
  const S = cuSeqlens.numel - 1;
  if (S < 1) throw new Error(`${op}: cuSeqlens needs at least 2 entries, got ${cuSeqlens.numel}`);
  const cu = I(cuSeqlens, `${op}.cuSeqlens (S+1)`, S + 1);
  if (cu[0] !== 0 || cu[S] !== T) throw new Error(`${op}: cuSeqlens must start at 0 and end at T=${T}, got [${cu[0]} .. ${cu[S]}]`);
  for (let s = 0; s < S; s++) if (cu[s + 1] < cu[s]) throw new Error(`${op}: cuSeqlens decreases at ${s}: ${cu[s]} > ${cu[s + 1]}`);
  return cu;
}
