// GEMM and the linear layer (HF nn.Linear layout: weight (OC,C)) on the tiled WGSL SGEMM.
import type { GpuTensor, Runtime } from "./runtime.ts";
import { grid } from "./runtime.ts";

function expectNumel(what: string, t: GpuTensor, n: number): void {
  if (t.numel !== n || t.dtype !== "f32") {
    throw new Error(`webgpu ${what}: expected f32 with ${n} elements, got ${t.dtype}[${t.numel}] (shape ${t.shape.join(",")})`);
  }
}

/** out (M,N) <- alpha * op(a) (M,K) @ op(b) (K,N) + beta * out */
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
  const k = { file: "matmul.wgsl", entry: "main", constants: { TRANS_A: transA ? 1 : 0, TRANS_B: transB ? 1 : 0 } };
  rt.dispatch(k, [out, a, b], "uuuff", [M, N, K, alpha, beta], [Math.ceil(N / 128), Math.ceil(M / 128), 1]);
}

/** out (N,OC) <- inp (N,C) @ weight (OC,C)^T + bias (OC) */
export function linearForward(rt: Runtime, out: GpuTensor, inp: GpuTensor, weight: GpuTensor, bias: GpuTensor | null,
  N: number, C: number, OC: number): void {
  gemm(rt, out, inp, weight, N, OC, C, false, true, 1, 0);
  if (bias) {
    expectNumel("linearForward.bias (OC)", bias, OC);
    rt.dispatch({ file: "bias.wgsl", entry: "add_rows" }, [out, bias], "uu", [N, OC], grid(N * OC, 256));
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
    rt.dispatch({ file: "bias.wgsl", entry: "colsum" }, [dbias, dout], "uu", [N, OC], [Math.ceil(OC / 256), 1, 1]);
  }
}
