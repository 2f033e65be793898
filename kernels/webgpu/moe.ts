// Mixture-of-experts combine and its backward, and the experts' grouped GEMM (every expert group
// in one dispatch, offsets read on the device), over the WGSL kernels beside this file. Route
// indices are not range-checked on the device (a read beyond a binding is clamped by WebGPU's
// robust access, never out of bounds); the MoE block builds them on the host.
import { f16Operands } from "./mixed.ts";
import { checkGroupSpec } from "../grouped_gemm_check.ts";
import type { GroupedGemmSpec } from "../ops.ts";
import { expectTensor } from "../tensor.ts";
import type { GpuTensor, Runtime } from "./runtime.ts";
import { grid } from "./runtime.ts";

// out (T,C) <- sum_k weights (T,K)[t,k] * rows (R,C)[idx (T,K)[t,k]]
export function moeCombine(rt: Runtime, out: GpuTensor, rows: GpuTensor, idx: GpuTensor, weights: GpuTensor,
  T: number, K: number, C: number, R: number): void {
  expectTensor(out, "moeCombine.out (T,C)", "f32", T * C);
  expectTensor(rows, "moeCombine.rows (R,C)", "f32", R * C);
  expectTensor(idx, "moeCombine.idx (T,K)", "i32", T * K);
  expectTensor(weights, "moeCombine.weights (T,K)", "f32", T * K);
  rt.dispatch({ file: "moe_combine.wgsl", entry: "forward" }, [out, rows, idx, weights], "uuu", [T, K, C], grid(T * C, 256));
}

// drows (R,C)[idx[t,k]] += weights[t,k] * dout[t]; dweights (T,K) += dout[t] . rows[idx[t,k]]
export function moeCombineBackward(rt: Runtime, drows: GpuTensor | null, dweights: GpuTensor | null, dout: GpuTensor,
  rows: GpuTensor, idx: GpuTensor, weights: GpuTensor, T: number, K: number, C: number, R: number): void {
  expectTensor(dout, "moeCombineBackward.dout (T,C)", "f32", T * C);
  expectTensor(rows, "moeCombineBackward.rows (R,C)", "f32", R * C);
  expectTensor(idx, "moeCombineBackward.idx (T,K)", "i32", T * K);
  expectTensor(weights, "moeCombineBackward.weights (T,K)", "f32", T * K);
  if (drows) {
    expectTensor(drows, "moeCombineBackward.drows (R,C)", "f32", R * C);
    rt.dispatch({ file: "moe_combine_drows.wgsl", entry: "backward" }, [drows, dout, idx, weights], "uuu", [T, K, C], grid(T * K * C, 256));
  }
  if (dweights) {
    expectTensor(dweights, "moeCombineBackward.dweights (T,K)", "f32", T * K);
    rt.dispatch({ file: "moe_combine_dweights.wgsl", entry: "backward" }, [dweights, dout, rows, idx], "uuu", [T, K, C], grid(T * K, 64));
  }
}

// per expert group e: out_e <- alpha op(a_e) op(b_e) + beta out_e (Kernels.groupedGemm), one dispatch
export function groupedGemm(rt: Runtime, out: GpuTensor, a: GpuTensor, b: GpuTensor, off: GpuTensor, maxRows: number, g: GroupedGemmSpec): void {
  checkGroupSpec(g, maxRows);
  expectTensor(off, "groupedGemm.off (E+1)", "i32", g.E + 1);
  for (const [t, what] of [[out, "out"], [a, "a"], [b, "b"]] as const) {
    if (t.dtype !== "f32") throw new Error(`webgpu groupedGemm.${what}: expected f32, got ${t.dtype}`);
  }
  const rows = (d: number) => (d < 0 ? maxRows : d);
  const M = rows(g.M), N = rows(g.N);
  if (M === 0 || N === 0) return;
  // mixed precision: both whole operands f16-rounded under one scale each (mixed.ts), as gemm
  if (rt.operands !== "f32") [a, b] = f16Operands(rt, a, b);
  rt.dispatch({ file: "grouped_matmul.wgsl", entry: "main" }, [out, a, b, off], "iiiffuuuuuuuuuuu",
    [g.M, g.N, g.K, g.alpha, g.beta, g.transA ? 1 : 0, g.transB ? 1 : 0, g.out.perExpert, g.out.perRow, g.out.ld,
      g.a.perExpert, g.a.perRow, g.a.ld, g.b.perExpert, g.b.perRow, g.b.ld],
    [Math.ceil(N / 16), Math.ceil(M / 16), g.E]);
}
