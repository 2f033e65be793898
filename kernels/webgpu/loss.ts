// Fused LM head + next-token cross-entropy in row chunks: logits (R,V) for R rows at a time in
// one reused work buffer, never (T,V). Per chunk: gemm -> xent.wgsl (loss per row, logits turned
// into dlogits in place) -> two gemms accumulating dhidden and dweight. Row losses are summed in
// a fixed order at the end (reduce.wgsl), so the loss is bit-reproducible.
import { expectTensor } from "../tensor.ts";
import { gemm } from "./matmul.ts";
import type { GpuTensor, Runtime } from "./runtime.ts";

function rows(n: number): [number, number, number] {
  return n <= 65535 ? [n, 1, 1] : [65535, Math.ceil(n / 65535), 1];
}

// loss (1) += sum of -log softmax(hidden (T,C) @ weight (V,C)^T)[targets]; dhidden, dweight += gradScale * grads
export function crossEntropyFused(rt: Runtime, loss: GpuTensor, dhidden: GpuTensor | null, dweight: GpuTensor | null,
  hidden: GpuTensor, weight: GpuTensor, targets: GpuTensor, T: number, C: number, V: number, gradScale: number): void {
  expectTensor(loss, "crossEntropyFused.loss (1)", "f32", 1);
  expectTensor(hidden, "crossEntropyFused.hidden (T,C)", "f32", T * C);
  expectTensor(weight, "crossEntropyFused.weight (V,C)", "f32", V * C);
  expectTensor(targets, "crossEntropyFused.targets (T)", "i32", T);
  if (dhidden) expectTensor(dhidden, "crossEntropyFused.dhidden (T,C)", "f32", T * C);
  if (dweight) expectTensor(dweight, "crossEntropyFused.dweight (V,C)", "f32", V * C);
  if (T === 0) return;
  const maxRows = Math.max(1, Math.min(T, Math.floor(Math.min(rt.tuning.xentChunkElems, rt.ctx.limits.maxStorageBufferBindingSize / 4) / V)));
  const logits = rt.temp("xent_logits", maxRows * V);
  const rowLoss = rt.temp("xent_rowloss", T);
  for (let r0 = 0; r0 < T; r0 += maxRows) {
    const R = Math.min(maxRows, T - r0);
    const z = rt.view(logits, 0, [R, V]);
    const h = rt.view(hidden, r0 * C, [R, C]);
    gemm(rt, z, h, weight, R, V, C, false, true, 1, 0);
    rt.dispatch({ file: "xent.wgsl", entry: "main" }, [z, rowLoss, targets, rt.errors], "uuuf", [R, r0, V, gradScale], rows(R));
    if (dhidden) gemm(rt, rt.view(dhidden, r0 * C, [R, C]), z, weight, R, C, V, false, false, 1, 1);
    if (dweight) gemm(rt, dweight, z, h, V, C, R, true, false, 1, 1);
  }
  rt.dispatch({ file: "reduce.wgsl", entry: "sum" }, [loss, rowLoss], "uuu", [T, 0, 1], [1, 1, 1]);
}
