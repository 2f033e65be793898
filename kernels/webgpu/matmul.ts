// GEMM and the linear layer (HF nn.Linear layout: weight (OC,C)) on the tiled WGSL SGEMM.
// Variants of matmul.wgsl (tools/bench/webgpu.ts measures them all):
//   t128  128x128 tile, 8x8 registers per invocation, BK 8: the large-matrix kernel
//   t64   64x64 tile, 4x4 registers, BK 8: 4x the workgroups, for matrices too small to fill a GPU
//   t128h t128 with f16 shared tiles (needs shader-f16): inputs rounded to f16, f32 accumulation;
//         never picked by "auto" (training is f32), only by tuning.matmul = "t128h"
//   t16   matmul_small.wgsl, one output per invocation: compiles fast on lavapipe (CI), where the
//         register-blocked kernels cost LLVM seconds each; "auto" on software adapters for small products
import type { GpuTensor, KernelRef, Runtime } from "./runtime.ts";
import { grid } from "./runtime.ts";
import { f16Operands } from "./mixed.ts";

export type MatmulVariant = "t128" | "t64" | "t128h" | "t16";
export const MATMUL_VARIANTS: Record<MatmulVariant, { tile: number; file?: string; defines?: Record<string, string>; prelude?: string }> = {
  t16: { tile: 16, file: "matmul_small.wgsl" },
  t128: { tile: 128 },
  t64: { tile: 64, defines: { BM: "64u", BN: "64u", BK: "8u", TM: "4u", TN: "4u" } },
  t128h: { tile: 128, defines: { ST: "f16" }, prelude: "enable f16;" },
};
/** On a software adapter "auto" uses t16 below this many multiply-adds (2^22 = 128 x 128 x 256). */
const SOFTWARE_T16_MAX_FMAS = 2 ** 22;
/** On a GPU "auto" uses t128 when it yields at least this many workgroups, else t64. */
const AUTO_MIN_WORKGROUPS = 64;

function pickVariant(rt: Runtime, M: number, N: number, K: number): MatmulVariant {
  const want = rt.tuning.matmul;
  if (want !== "auto") {
    if (want === "t128h" && !rt.ctx.f16) throw new Error("webgpu gemm: tuning.matmul t128h needs the shader-f16 feature");
    return want;
  }
  // Software adapters: t16 for small products (CI shapes: compile time dominates), t128 for
  // real work (10x faster on lavapipe: 2.8 vs 0.3 GFLOP/s at 1024^3).
  if (!rt.ctx.adapter.isHardware) return M * N * K < SOFTWARE_T16_MAX_FMAS ? "t16" : "t128";
  return Math.ceil(M / 128) * Math.ceil(N / 128) >= AUTO_MIN_WORKGROUPS ? "t128" : "t64";
}

function expectNumel(what: string, t: GpuTensor, n: number): void {
  if (t.numel !== n || t.dtype !== "f32") {
    throw new Error(`webgpu ${what}: expected f32 with ${n} elements, got ${t.dtype}[${t.numel}] (shape ${t.shape.join(",")})`);
  }
}

/** out (M,N) <- alpha * op(a) (M,K) @ op(b) (K,N) + beta * out (operands f16-rounded under mixed precision) */
export function gemm(rt: Runtime, out: GpuTensor, a: GpuTensor, b: GpuTensor, M: number, N: number, K: number,
  transA: boolean, transB: boolean, alpha: number, beta: number): void {
  expectNumel("gemm.out (M,N)", out, M * N);
  expectNumel("gemm.a", a, M * K);
  expectNumel("gemm.b", b, K * N);
  if (M * N === 0) return;
  if (K === 0) {
    // op(a) @ op(b) is all zeros: out <- beta * out (beta = 0 overwrites).
    if (beta === 0) return rt.dispatch({ file: "fill.wgsl", entry: "fill" }, [out], "uu", [out.numel, 0], grid(out.numel, 256));
    return rt.dispatch({ file: "fill.wgsl", entry: "scale" }, [out], "uu", [out.numel, new Uint32Array(new Float32Array([beta]).buffer)[0]!], grid(out.numel, 256));
  }
  // mixed precision: both operands rounded to f16 (scaled per tensor), then the f32 GEMM on them
  if (rt.operands !== "f32") [a, b] = f16Operands(rt, a, b);
  const v = MATMUL_VARIANTS[pickVariant(rt, M, N, K)];
  const k: KernelRef = { file: v.file ?? "matmul.wgsl", entry: "main", defines: v.defines, prelude: v.prelude };
  rt.dispatch(k, [out, a, b], "uuuffuu", [M, N, K, alpha, beta, transA ? 1 : 0, transB ? 1 : 0],
    [Math.ceil(N / v.tile), Math.ceil(M / v.tile), 1]);
}

/** out (N,OC) <- inp (N,C) @ weight (OC,C)^T + bias (OC) */
export function linearForward(rt: Runtime, out: GpuTensor, inp: GpuTensor, weight: GpuTensor, bias: GpuTensor | null,
  N: number, C: number, OC: number): void {
  gemm(rt, out, inp, weight, N, OC, C, false, true, 1, 0);
  if (bias) {
    expectNumel("linearForward.bias (OC)", bias, OC);
    rt.dispatch({ file: "bias.wgsl", entry: "add_rows" }, [out, bias], "uuu", [N, OC, 0], grid(N * OC, 256));
  }
}

/** dinp (N,C) += dout (N,OC) @ weight (OC,C); dweight (OC,C) += dout^T @ inp; dbias (OC) += sum_n dout */
export function linearBackward(rt: Runtime, dinp: GpuTensor | null, dweight: GpuTensor | null, dbias: GpuTensor | null,
  dout: GpuTensor, inp: GpuTensor, weight: GpuTensor, N: number, C: number, OC: number): void {
  if (dinp) gemm(rt, dinp, dout, weight, N, C, OC, false, false, 1, 1);
  if (dweight) gemm(rt, dweight, dout, inp, OC, C, N, true, false, 1, 1);
  if (dbias) {
    expectNumel("linearBackward.dbias (OC)", dbias, OC);
    expectNumel("linearBackward.dout (N,OC)", dout, N * OC);
    // Column sums in CH chunks of R rows (CH x OC threads), then the CH partials in order.
    const CH = Math.max(1, Math.min(64, Math.ceil(N / 64)));
    const R = Math.ceil(N / CH);
    const part = rt.temp("dbias_part", CH * OC);
    rt.dispatch({ file: "bias.wgsl", entry: "colsum_part" }, [part, dout], "uuu", [N, OC, R], [Math.ceil(OC / 64), CH, 1]);
    rt.dispatch({ file: "bias.wgsl", entry: "colsum" }, [dbias, part], "uuu", [CH, OC, 0], [Math.ceil(OC / 256), 1, 1]);
  }
}
