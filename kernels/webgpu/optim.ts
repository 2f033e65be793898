// Optimizer kernels: global squared grad norm (deterministic two-level reduction) and AdamW.
import type { AdamWParams } from "../ops.ts";
import { expectTensor } from "../tensor.ts";
import type { GpuTensor, Runtime } from "./runtime.ts";
import { grid } from "./runtime.ts";

const MAX_SLICES = 1024; // per buffer: workgroups in the first pass

// out (1) <- sum over bufs of sum(x^2), buffers in order, slices in order within each
export function sumSquares(rt: Runtime, out: GpuTensor, bufs: readonly GpuTensor[]): void {
  expectTensor(out, "sumSquares.out (1)", "f32", 1);
  const plan = bufs.map((b, i) => {
    if (b.dtype !== "f32") throw new Error(`webgpu sumSquares.bufs[${i}]: expected f32, got ${b.dtype}`);
    const slices = Math.max(1, Math.min(MAX_SLICES, Math.ceil(b.numel / 4096)));
    return { b, slices, per: Math.ceil(b.numel / slices) };
  });
  const total = plan.reduce((s, p) => s + p.slices, 0);
  const partials = rt.temp("sumsq_partials", Math.max(1, total));
  let at = 0;
  for (const { b, slices, per } of plan) {
    if (b.numel > 0) {
      rt.dispatch({ file: "reduce.wgsl", entry: "sumsq" }, [rt.view(partials, at, [slices]), b], "uuu", [b.numel, per, 0], [slices, 1, 1]);
    } else {
      rt.dispatch({ file: "fill.wgsl", entry: "fill" }, [rt.view(partials, at, [1])], "uu", [1, 0], [1, 1, 1]);
    }
    at += slices;
  }
  rt.dispatch({ file: "reduce.wgsl", entry: "sum" }, [out, partials], "uuu", [total, 0, 0], [1, 1, 1]);
}

// param, m, v (n) updated in place from grad (n)
export function adamw(rt: Runtime, param: GpuTensor, grad: GpuTensor, m: GpuTensor, v: GpuTensor, p: AdamWParams): void {
  const n = param.numel;
  expectTensor(param, "adamw.param", "f32", n);
  expectTensor(grad, "adamw.grad", "f32", n);
  expectTensor(m, "adamw.m", "f32", n);
  expectTensor(v, "adamw.v", "f32", n);
  // Bias corrections in f64 on the host (as torch does in Python floats).
  const stepSize = p.lr / (1 - p.beta1 ** p.step);
  const bc2sqrt = Math.sqrt(1 - p.beta2 ** p.step);
  rt.dispatch({ file: "adamw.wgsl", entry: "main" }, [param, m, v, grad], "ufffffff",
    [n, p.beta1, p.beta2, p.eps, 1 - p.lr * p.weightDecay, stepSize, bc2sqrt, p.gradScale], grid(n, 256));
}
