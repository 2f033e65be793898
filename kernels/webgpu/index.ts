// The WebGPU backend: one object implementing the whole `Kernels` contract (the type checker
// proves completeness) over WGSL kernels run through bun-webgpu (Dawn). Ops enqueue into one
// command encoder; the only waits are `read` and `sync` (SYNC POINTS). Buffers live on the device.
//
//   const k = await createWebGpuKernels({ log });   // throws if there is no real adapter
import type { AdamWParams, AllocOptions, GeluKind, GroupedGemmSpec, Kernels } from "../ops.ts";
import type { DType, HostArray, Tensor } from "../tensor.ts";
import { attentionBackward, attentionForward } from "./attention.ts";
import { adapterLine, openGpu } from "./device.ts";
import { add, axpy, copy, copyCols, fill, scale } from "./elementwise.ts";
import * as L from "./layers.ts";
import { crossEntropyFused } from "./loss.ts";
import { gemm, linearBackward, linearForward } from "./matmul.ts";
import { groupedGemm, moeCombine, moeCombineBackward } from "./moe.ts";
import { adamw, sumSquares } from "./optim.ts";
import { operandsLine } from "./mixed.ts";
import type { GpuTensor, GpuTuning } from "./runtime.ts";
import { DEFAULT_GPU_TUNING, Runtime } from "./runtime.ts";

export { probeAdapter, resolveBackend, adapterLine } from "./device.ts";
export type { AdapterSummary, GpuContext } from "./device.ts";
export { Runtime } from "./runtime.ts";

/** Every tensor handed to this backend must be one of ours. */
function g<D extends DType>(t: Tensor<D>, what = "tensor"): GpuTensor<D> {
  if (t.storage.backend !== "webgpu") {
    throw new Error(`webgpu: ${what} ${t.shape.join("x")} lives on backend '${t.storage.backend}', not webgpu`);
  }
  return t as GpuTensor<D>;
}

export class WebgpuKernels implements Kernels {
  readonly backend = "webgpu" as const;
  readonly description: string;
  /** Mixed precision is f32 on webgpu (the description says so): no bf16 parameter copies. */
  readonly bf16Params = null;

  constructor(readonly rt: Runtime) {
    const c = rt.ctx;
    this.description = `${adapterLine(c.adapter)} f16=${c.f16} subgroups=${c.subgroups}; ${operandsLine(rt.operands)}`;
  }

  alloc<D extends DType = "f32">(shape: readonly number[], dtype?: D, opts?: AllocOptions): Tensor<D> {
    return this.rt.alloc(shape, (dtype ?? "f32") as D, opts?.name ?? "tensor");
  }
  view<D extends DType>(flat: Tensor<D>, offsetElems: number, shape: readonly number[]): Tensor<D> {
    return this.rt.view(g(flat, "view of"), offsetElems, shape);
  }
  free(t: Tensor): void { this.rt.free(g(t)); }
  upload<D extends DType>(dst: Tensor<D>, src: HostArray<D>): void {
    if (src.length !== dst.numel) throw new Error(`webgpu upload: ${src.length} values for a tensor of ${dst.numel}`);
    this.rt.upload(g(dst), src);
  }
  read<D extends DType>(t: Tensor<D>): Promise<HostArray<D>> { return this.rt.read(g(t)); }
  readInto(t: Tensor<"f32">, dst: Float32Array): Promise<void> { return this.rt.readInto(g(t), dst); }
  sync(): Promise<void> { return this.rt.sync(); }

  zero(t: Tensor): void { fill(this.rt, g(t), 0); }
  fill(t: Tensor, value: number): void { fill(this.rt, g(t), value); }
  copy(dst: Tensor, src: Tensor): void { copy(this.rt, g(dst), g(src)); }
  add(out: Tensor<"f32">, a: Tensor<"f32">, b: Tensor<"f32">): void { add(this.rt, g(out), g(a), g(b)); }
  scale(t: Tensor<"f32">, s: number): void { scale(this.rt, g(t), s); }
  copyCols(dst: Tensor<"f32">, src: Tensor<"f32">, N: number, width: number, dstW: number, dstOff: number, dstStride: number,
    srcW: number, srcOff: number, srcStride: number, accumulate: boolean): void {
    copyCols(this.rt, g(dst), g(src), N, width, dstW, dstOff, dstStride, srcW, srcOff, srcStride, accumulate);
  }
  axpy(y: Tensor<"f32">, alpha: number, x: Tensor<"f32">): void { axpy(this.rt, g(y), alpha, g(x)); }

  gemm(out: Tensor<"f32">, a: Tensor<"f32">, b: Tensor<"f32">, M: number, N: number, K: number,
    transA: boolean, transB: boolean, alpha: number, beta: number): void {
    gemm(this.rt, g(out), g(a), g(b), M, N, K, transA, transB, alpha, beta);
  }
  linearForward(out: Tensor<"f32">, inp: Tensor<"f32">, weight: Tensor<"f32">, bias: Tensor<"f32"> | null,
    N: number, C: number, OC: number): void {
    linearForward(this.rt, g(out), g(inp), g(weight), bias && g(bias), N, C, OC);
  }
  linearBackward(dinp: Tensor<"f32"> | null, dweight: Tensor<"f32"> | null, dbias: Tensor<"f32"> | null,
    dout: Tensor<"f32">, inp: Tensor<"f32">, weight: Tensor<"f32">, N: number, C: number, OC: number): void {
    linearBackward(this.rt, dinp && g(dinp), dweight && g(dweight), dbias && g(dbias), g(dout), g(inp), g(weight), N, C, OC);
  }

  embeddingForward(out: Tensor<"f32">, ids: Tensor<"i32">, table: Tensor<"f32">, T: number, C: number, V: number): void {
    L.embeddingForward(this.rt, g(out), g(ids), g(table), T, C, V);
  }
  embeddingBackward(dtable: Tensor<"f32">, dout: Tensor<"f32">, ids: Tensor<"i32">, T: number, C: number, V: number): void {
    L.embeddingBackward(this.rt, g(dtable), g(dout), g(ids), T, C, V);
  }
  rmsnormForward(out: Tensor<"f32">, rstd: Tensor<"f32">, inp: Tensor<"f32">, weight: Tensor<"f32">,
    N: number, C: number, eps: number): void {
    L.rmsnormForward(this.rt, g(out), g(rstd), g(inp), g(weight), N, C, eps);
  }
  rmsnormBackward(dinp: Tensor<"f32">, dweight: Tensor<"f32"> | null, dout: Tensor<"f32">, inp: Tensor<"f32">,
    weight: Tensor<"f32">, rstd: Tensor<"f32">, N: number, C: number): void {
    L.rmsnormBackward(this.rt, g(dinp), dweight && g(dweight), g(dout), g(inp), g(weight), g(rstd), N, C);
  }
  ropeForward(out: Tensor<"f32">, inp: Tensor<"f32">, cos: Tensor<"f32">, sin: Tensor<"f32">,
    positions: Tensor<"i32">, T: number, NH: number, HS: number): void {
    L.ropeForward(this.rt, g(out), g(inp), g(cos), g(sin), g(positions), T, NH, HS);
  }
  ropeBackward(dinp: Tensor<"f32">, dout: Tensor<"f32">, cos: Tensor<"f32">, sin: Tensor<"f32">,
    positions: Tensor<"i32">, T: number, NH: number, HS: number): void {
    L.ropeBackward(this.rt, g(dinp), g(dout), g(cos), g(sin), g(positions), T, NH, HS);
  }
  layernormForward(out: Tensor<"f32">, mean: Tensor<"f32">, rstd: Tensor<"f32">, inp: Tensor<"f32">, weight: Tensor<"f32">,
    bias: Tensor<"f32">, N: number, C: number, eps: number): void {
    L.layernormForward(this.rt, g(out), g(mean), g(rstd), g(inp), g(weight), g(bias), N, C, eps);
  }
  layernormBackward(dinp: Tensor<"f32">, dweight: Tensor<"f32"> | null, dbias: Tensor<"f32"> | null, dout: Tensor<"f32">,
    inp: Tensor<"f32">, weight: Tensor<"f32">, mean: Tensor<"f32">, rstd: Tensor<"f32">, N: number, C: number): void {
    L.layernormBackward(this.rt, g(dinp), dweight && g(dweight), dbias && g(dbias), g(dout), g(inp), g(weight), g(mean), g(rstd), N, C);
  }
  geluForward(out: Tensor<"f32">, inp: Tensor<"f32">, N: number, kind: GeluKind): void {
    L.geluForward(this.rt, g(out), g(inp), N, kind);
  }
  geluBackward(dinp: Tensor<"f32">, dout: Tensor<"f32">, inp: Tensor<"f32">, N: number, kind: GeluKind): void {
    L.geluBackward(this.rt, g(dinp), g(dout), g(inp), N, kind);
  }
  attentionForward(out: Tensor<"f32">, lse: Tensor<"f32">, q: Tensor<"f32">, k: Tensor<"f32">, v: Tensor<"f32">,
    cuSeqlens: Tensor<"i32">, T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void {
    attentionForward(this.rt, g(out), g(lse), g(q), g(k), g(v), g(cuSeqlens), T, NH, NKV, HS, scale, causal);
  }
  attentionBackward(dq: Tensor<"f32">, dk: Tensor<"f32">, dv: Tensor<"f32">, dout: Tensor<"f32">,
    q: Tensor<"f32">, k: Tensor<"f32">, v: Tensor<"f32">, out: Tensor<"f32">, lse: Tensor<"f32">,
    cuSeqlens: Tensor<"i32">, T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void {
    attentionBackward(this.rt, g(dq), g(dk), g(dv), g(dout), g(q), g(k), g(v), g(out), g(lse), g(cuSeqlens),
      T, NH, NKV, HS, scale, causal);
  }
  swigluForward(out: Tensor<"f32">, gate: Tensor<"f32">, up: Tensor<"f32">, N: number): void {
    L.swigluForward(this.rt, g(out), g(gate), g(up), N);
  }
  swigluBackward(dgate: Tensor<"f32">, dup: Tensor<"f32">, dout: Tensor<"f32">, gate: Tensor<"f32">,
    up: Tensor<"f32">, N: number): void {
    L.swigluBackward(this.rt, g(dgate), g(dup), g(dout), g(gate), g(up), N);
  }
  groupedGemm(out: Tensor<"f32">, a: Tensor<"f32">, b: Tensor<"f32">, off: Tensor<"i32">, maxRows: number, spec: GroupedGemmSpec): void {
    groupedGemm(this.rt, g(out), g(a), g(b), g(off), maxRows, spec);
  }
  moeCombine(out: Tensor<"f32">, rows: Tensor<"f32">, idx: Tensor<"i32">, weights: Tensor<"f32">,
    T: number, K: number, C: number, R: number): void {
    moeCombine(this.rt, g(out), g(rows), g(idx), g(weights), T, K, C, R);
  }
  moeCombineBackward(drows: Tensor<"f32"> | null, dweights: Tensor<"f32"> | null, dout: Tensor<"f32">, rows: Tensor<"f32">,
    idx: Tensor<"i32">, weights: Tensor<"f32">, T: number, K: number, C: number, R: number): void {
    moeCombineBackward(this.rt, drows && g(drows), dweights && g(dweights), g(dout), g(rows), g(idx), g(weights), T, K, C, R);
  }
  crossEntropyFused(loss: Tensor<"f32">, dhidden: Tensor<"f32"> | null, dweight: Tensor<"f32"> | null,
    hidden: Tensor<"f32">, weight: Tensor<"f32">, targets: Tensor<"i32">,
    T: number, C: number, V: number, gradScale: number): void {
    if (dweight && dweight.storage === weight.storage && dweight.offset === weight.offset) {
      throw new Error("crossEntropyFused: dweight aliasing weight (the gradient replacing the weight) is implemented on the cpu backends only");
    }
    crossEntropyFused(this.rt, g(loss), dhidden && g(dhidden), dweight && g(dweight), g(hidden), g(weight), g(targets),
      T, C, V, gradScale);
  }
  sumSquares(out: Tensor<"f32">, bufs: readonly Tensor<"f32">[]): void {
    sumSquares(this.rt, g(out), bufs.map((b) => g(b)));
  }
  adamw(param: Tensor<"f32">, grad: Tensor<"f32">, m: Tensor<"f32">, v: Tensor<"f32">, p: AdamWParams): void {
    adamw(this.rt, g(param), g(grad), g(m), g(v), p);
  }
}

export interface WebgpuKernelsOptions {
  /** Receives the one adapter line when the device opens (first call in the process). */
  log?: (line: string) => void;
  tuning?: Partial<GpuTuning>;
  /** train.enable_mixed_precision: GEMM operands rounded to f16, f32 accumulation (mixed.ts). */
  mixedPrecision?: boolean;
}

/** Opens the device (once per process) and returns the backend; throws when there is no real adapter. */
export async function createWebGpuKernels(opts: WebgpuKernelsOptions = {}): Promise<WebgpuKernels> {
  return new WebgpuKernels(new Runtime(await openGpu(opts.log), { ...DEFAULT_GPU_TUNING, ...opts.tuning }, opts.mixedPrecision ?? false));
}
