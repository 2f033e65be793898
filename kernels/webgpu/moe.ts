// Mixture-of-experts combine and its backward over the WGSL kernels beside this file. Route
// indices are not range-checked on the device (a read beyond a binding is clamped by WebGPU's
// robust access, never out of bounds); the MoE block builds them on the host.
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
