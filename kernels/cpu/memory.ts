// CPU tensors: storage is one typed array (optionally over a SharedArrayBuffer so the mesh
// transport thread can read and write it), a tensor is a subarray view of it. Everything here runs
// synchronously, so the "enqueue" of the Kernels contract is simply "do it now".

import { expectTensor, numelOf, shapeStr, type DType, type HostArray, type Storage, type Tensor } from "../tensor.ts";
import type { AllocOptions } from "../ops.ts";

export interface CpuStorage extends Storage {
  readonly backend: "cpu";
  readonly data: Float32Array | Int32Array;
  readonly name: string;
  freed: boolean;
}

function makeArray(dtype: DType, n: number, shared: boolean): Float32Array | Int32Array {
  const buf = shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4);
  return dtype === "f32" ? new Float32Array(buf) : new Int32Array(buf);
}

function makeTensor<D extends DType>(st: CpuStorage, offset: number, shape: readonly number[]): Tensor<D> {
  const numel = numelOf(shape);
  return {
    shape: [...shape], dtype: st.dtype as D, numel, storage: st, offset,
    host: st.data.subarray(offset, offset + numel) as HostArray<D>,
  };
}

export function cpuAlloc<D extends DType = "f32">(shape: readonly number[], dtype?: D, opts?: AllocOptions): Tensor<D> {
  const dt = (dtype ?? "f32") as D;
  if (dt !== "f32" && dt !== "i32") throw new Error(`alloc ${opts?.name ?? ""}: dtype must be f32 or i32, got ${String(dt)}`);
  const n = numelOf(shape);
  const st: CpuStorage = {
    backend: "cpu", dtype: dt, numel: n, data: makeArray(dt, n, opts?.shared ?? true),
    name: opts?.name ?? `tensor${shapeStr(shape)}`, freed: false,
  };
  return makeTensor<D>(st, 0, shape);
}

/** Wrap an existing host array (e.g. one received from another thread) as a CPU tensor without copying. */
export function cpuWrap<D extends DType>(data: HostArray<D>, shape: readonly number[], name = "wrapped"): Tensor<D> {
  const dtype = (data instanceof Float32Array ? "f32" : "i32") as D;
  if (numelOf(shape) !== data.length) throw new Error(`cpuWrap ${name}: shape ${shapeStr(shape)} needs ${numelOf(shape)} elements, array has ${data.length}`);
  const st: CpuStorage = { backend: "cpu", dtype, numel: data.length, data, name, freed: false };
  return makeTensor<D>(st, 0, shape);
}

export function cpuStorage(t: Tensor, what: string): CpuStorage {
  const st = t.storage as CpuStorage;
  if (st.backend !== "cpu") throw new Error(`${what}: tensor lives on backend ${st.backend}, not cpu`);
  if (st.freed) throw new Error(`${what}: tensor ${st.name} was freed`);
  return st;
}

export function cpuView<D extends DType>(flat: Tensor<D>, offsetElems: number, shape: readonly number[]): Tensor<D> {
  const st = cpuStorage(flat, "view");
  const n = numelOf(shape);
  if (!Number.isInteger(offsetElems) || offsetElems < 0 || offsetElems + n > flat.numel) {
    throw new Error(`view of ${st.name}: offset ${offsetElems} + ${n} elements ${shapeStr(shape)} exceeds its ${flat.numel} elements`);
  }
  return makeTensor<D>(st, flat.offset + offsetElems, shape);
}

/** The f32 host array of `t` after checking dtype and element count (an op-edge check, O(1)). */
export function F(t: Tensor, what: string, numel: number): Float32Array {
  expectTensor(t, what, "f32", numel);
  cpuStorage(t, what);
  return t.host as Float32Array;
}

/** The i32 host array of `t` after checking dtype and element count. */
export function I(t: Tensor, what: string, numel: number): Int32Array {
  expectTensor(t, what, "i32", numel);
  cpuStorage(t, what);
  return t.host as Int32Array;
}

/** Memory ops and elementwise ops shared by the reference and fast CPU backends. */
export class CpuMemory {
  readonly backend = "cpu" as const;

  alloc<D extends DType = "f32">(shape: readonly number[], dtype?: D, opts?: AllocOptions): Tensor<D> {
    return cpuAlloc(shape, dtype, opts);
  }
  view<D extends DType>(flat: Tensor<D>, offsetElems: number, shape: readonly number[]): Tensor<D> {
    return cpuView(flat, offsetElems, shape);
  }
  free(t: Tensor): void {
    const st = cpuStorage(t, "free");
    if (t.offset === 0 && t.numel === st.numel) st.freed = true; // views: no-op
  }
  upload<D extends DType>(dst: Tensor<D>, src: HostArray<D>): void {
    cpuStorage(dst, "upload");
    if (src.length !== dst.numel) throw new Error(`upload: source has ${src.length} elements, tensor ${shapeStr(dst.shape)} has ${dst.numel}`);
    if ((src instanceof Float32Array ? "f32" : "i32") !== dst.dtype) throw new Error(`upload: source array type does not match tensor dtype ${dst.dtype}`);
    (dst.host as HostArray<D>).set(src as never);
  }
  read<D extends DType>(t: Tensor<D>): Promise<HostArray<D>> {
    cpuStorage(t, "read");
    return Promise.resolve((t.host as HostArray<D>).slice() as HostArray<D>);
  }
  readInto(t: Tensor<"f32">, dst: Float32Array): Promise<void> {
    cpuStorage(t, "readInto");
    if (dst.length !== t.numel) throw new Error(`readInto: host array of ${dst.length} for tensor ${shapeStr(t.shape)}`);
    if (dst !== t.host) dst.set(t.host as Float32Array);
    return Promise.resolve();
  }
  sync(): Promise<void> {
    return Promise.resolve();
  }

  zero(t: Tensor): void {
    cpuStorage(t, "zero");
    t.host!.fill(0);
  }
  fill(t: Tensor, value: number): void {
    cpuStorage(t, "fill");
    t.host!.fill(value);
  }
  copy(dst: Tensor, src: Tensor): void {
    expectTensor(src, "copy.src", dst.dtype, dst.numel);
    cpuStorage(dst, "copy.dst");
    cpuStorage(src, "copy.src");
    (dst.host as Float32Array).set(src.host as Float32Array);
  }
  add(out: Tensor<"f32">, a: Tensor<"f32">, b: Tensor<"f32">): void {
    const n = out.numel;
    const o = F(out, "add.out", n), x = F(a, "add.a", n), y = F(b, "add.b", n);
    for (let i = 0; i < n; i++) o[i] = x[i] + y[i];
  }
  scale(t: Tensor<"f32">, s: number): void {
    const x = F(t, "scale.t", t.numel);
    const n = x.length;
    for (let i = 0; i < n; i++) x[i] *= s;
  }
  axpy(y: Tensor<"f32">, alpha: number, x: Tensor<"f32">): void {
    const n = y.numel;
    const yy = F(y, "axpy.y", n), xx = F(x, "axpy.x", n);
    for (let i = 0; i < n; i++) yy[i] += alpha * xx[i];
  }
}
