/// <reference types="@webgpu/types" />
// The WebGPU execution engine under the ops: buffers, cached pipelines and bind groups, one
// command encoder that batches dispatches, a ring of uniform parameters, and the two sync points.
//
// Conventions every .wgsl kernel follows (so ops stay one-liners):
// - @group(0) @binding(0) is `var<uniform> p: P`; its first fields are one u32 per tensor binding
//   (the tensor's element offset inside the bound window, in binding order), then the kernel's
//   own scalars. Tensors are bindings 1..n, `var<storage, read>` or `var<storage, read_write>`.
// - Tensors are views (offset into a flat buffer); a binding covers the window from the offset
//   rounded down to minStorageBufferOffsetAlignment, so any element offset works.
// Nothing here waits on the GPU except `read` and `sync` (labelled SYNC POINT).

import type { BackendName, DType, HostArray, Storage, Tensor } from "../tensor.ts";
import { numelOf, shapeStr } from "../tensor.ts";
import type { GpuContext } from "./device.ts";
import { type KernelRef, type Pipeline, PipelineCache } from "./pipelines.ts";
import { GpuProfiler } from "./profiler.ts";
import { matmulOperands, type MatmulOperands } from "./mixed.ts";

export type { KernelRef } from "./pipelines.ts";

export class GpuStorage implements Storage {
  readonly backend: BackendName = "webgpu";
  freed = false;
  constructor(readonly dtype: DType, readonly numel: number, readonly buffer: GPUBuffer,
    readonly id: number, readonly name: string) {}
}

export interface GpuTensor<D extends DType = DType> extends Tensor<D> {
  readonly storage: GpuStorage;
}

/** Sizes tests shrink so multi-chunk paths run on small shapes. */
export interface GpuTuning {
  /** Logits per cross-entropy chunk (R rows x V). */
  xentChunkElems: number;
  /** GEMM kernel variant (matmul.ts); "auto" picks by matrix size. */
  matmul: "auto" | "t128" | "t64" | "t128h" | "t16";
  /** Time every dispatch with timestamp queries (profiler.ts); benchmarks only. */
  profile: boolean;
  /** Mixed precision's f16 rounding of GEMM operands (mixed.ts): "auto" = the shader-f16
   *  conversion where the device has it; tests force either to compare them. */
  f16Cast: "auto" | "native" | "emulated";
}
export const DEFAULT_GPU_TUNING: GpuTuning = { xentChunkElems: 8 * 2 ** 20, matmul: "auto", profile: false, f16Cast: "auto" }; // 32 MiB of logits

const PARAM_SLOT = 256; // bytes per dispatch in the uniform ring (>= minUniformBufferOffsetAlignment)
const RING_SLOTS = 1024;
const SUBMIT_EVERY = 128; // dispatches per command buffer: lets the GPU start while we encode

// GPUBufferUsage.STORAGE | COPY_SRC | COPY_DST (the globals exist only after bun-webgpu's setupGlobals).
const BUF_USAGE = 0x80 | 0x4 | 0x8;

export class Runtime {
  readonly device: GPUDevice;
  private readonly queue: GPUQueue;
  private readonly align: number; // bytes, storage binding offset alignment
  private readonly pipelines: PipelineCache;
  private bindGroups = new Map<string, GPUBindGroup>();
  private readonly paramBuf: GPUBuffer;
  private readonly paramHost = new ArrayBuffer(PARAM_SLOT * RING_SLOTS);
  private readonly paramU32 = new Uint32Array(this.paramHost);
  private readonly paramF32 = new Float32Array(this.paramHost);
  private paramSlots = 0;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private dispatches = 0;
  private nextId = 1;
  private scratch: GPUBuffer[] = [];
  private readonly temps = new Map<string, GpuTensor<"f32">>();
  private readonly stagingPool = new Map<number, GPUBuffer[]>();
  private uploadScratch = new ArrayBuffer(0);
  /** Per-kernel GPU times when tuning.profile is set and the adapter has timestamp queries. */
  readonly profiler: GpuProfiler | null;
  /** Counters for the bench and tests: dispatches, submits, host<->device bytes, alias copies. */
  readonly stats = { dispatches: 0, submits: 0, readBytes: 0, uploadBytes: 0, scratchCopies: 0 };

  /** 4 x u32 on the device: [code bits, offending value, -, -]; kernels that validate ids set it
   *  (code 1 embedding id, 2 cross-entropy target); every sync point checks and clears it. */
  readonly errors: GpuTensor<"i32">;

  /** GEMM operands: f32, or f16-rounded under train.enable_mixed_precision (mixed.ts). */
  readonly operands: MatmulOperands;

  constructor(readonly ctx: GpuContext, readonly tuning: GpuTuning = DEFAULT_GPU_TUNING, mixedPrecision = false) {
    this.device = ctx.device;
    this.operands = matmulOperands(mixedPrecision, ctx.f16, tuning.f16Cast);
    this.queue = ctx.device.queue;
    this.align = Math.max(4, ctx.limits.minStorageBufferOffsetAlignment);
    this.paramBuf = this.device.createBuffer({ size: this.paramHost.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.pipelines = new PipelineCache(this.device);
    this.errors = this.alloc([4], "i32", "device_errors");
    this.profiler = tuning.profile && ctx.timestamps ? new GpuProfiler(this.device) : null;
  }

  // ------------------------------------------------------------------ memory
  alloc<D extends DType>(shape: readonly number[], dtype: D, name: string): GpuTensor<D> {
    const numel = numelOf(shape);
    const size = Math.max(16, Math.ceil((numel * 4) / 16) * 16);
    if (size > this.ctx.limits.maxBufferSize) {
      throw new Error(`webgpu alloc ${name} ${shapeStr(shape)}: ${size} bytes > maxBufferSize ${this.ctx.limits.maxBufferSize}`);
    }
    const buffer = this.device.createBuffer({ size, usage: BUF_USAGE, label: name }); // zero-filled by spec
    const storage = new GpuStorage(dtype, numel, buffer, this.nextId++, name);
    return { shape: [...shape], dtype, numel, storage, offset: 0 };
  }

  /** A view `offsetElems` into `t` (shares storage). */
  view<D extends DType>(t: GpuTensor<D>, offsetElems: number, shape: readonly number[]): GpuTensor<D> {
    const numel = numelOf(shape);
    if (!Number.isInteger(offsetElems) || offsetElems < 0 || offsetElems + numel > t.numel) {
      throw new Error(`webgpu view of '${t.storage.name}' ${shapeStr(t.shape)}: offset ${offsetElems} + ${shapeStr(shape)} does not fit`);
    }
    return { shape: [...shape], dtype: t.dtype, numel, storage: t.storage, offset: t.offset + offsetElems };
  }

  /**
   * A named work buffer of at least `numel` f32 elements, allocated once and grown when a larger
   * one is asked for (so steady-state steps allocate nothing). Returned as a view of exactly numel.
   */
  temp(name: string, numel: number): GpuTensor<"f32"> {
    let t = this.temps.get(name);
    if (!t || t.numel < numel) {
      if (t) this.free(t);
      t = this.alloc([Math.max(numel, 4)], "f32", `temp:${name}`);
      this.temps.set(name, t);
    }
    return this.view(t, 0, [numel]);
  }

  free(t: GpuTensor): void {
    if (t.offset !== 0 || t.numel !== t.storage.numel || t.storage.freed) return;
    this.flush(); // queued work may still use it; Dawn defers the real release until then
    t.storage.freed = true;
    t.storage.buffer.destroy();
    this.bindGroups = new Map(); // entries may reference the buffer
  }

  /** Enqueue host -> device. Submits pending work first so earlier ops see the old contents. */
  upload(dst: GpuTensor, src: HostArray): void {
    this.live(dst, "upload");
    this.flush();
    let data: ArrayBuffer = src.buffer as ArrayBuffer, at = src.byteOffset;
    if (!(src.buffer instanceof ArrayBuffer)) {
      // bun-webgpu refuses SharedArrayBuffer views (the CPU/mesh host buffers): go through a
      // reused plain buffer (Dawn copies the bytes during writeBuffer, so reuse is safe).
      if (this.uploadScratch.byteLength < src.byteLength) this.uploadScratch = new ArrayBuffer(src.byteLength);
      new Uint8Array(this.uploadScratch, 0, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
      data = this.uploadScratch;
      at = 0;
    }
    this.queue.writeBuffer(dst.storage.buffer, dst.offset * 4, data, at, src.byteLength);
    this.stats.uploadBytes += src.byteLength;
  }

  /** Enqueue a buffer-to-buffer copy (same byte count). */
  copyBuffer(dst: GpuTensor, src: GpuTensor): void {
    this.endPass();
    this.enc().copyBufferToBuffer(src.storage.buffer, src.offset * 4, dst.storage.buffer, dst.offset * 4, dst.numel * 4);
  }

  // ------------------------------------------------------------------ sync points
  /** SYNC POINT: a fresh host copy of `t` after all enqueued work. */
  async read<D extends DType>(t: GpuTensor<D>): Promise<HostArray<D>> {
    const out = t.dtype === "i32" ? new Int32Array(t.numel) : new Float32Array(t.numel);
    await this.readInto(t, out);
    return out as HostArray<D>;
  }

  /**
   * SYNC POINT: copies `t` into `dst` (e.g. the mesh's shared host buffer for a collective): one
   * device-to-staging copy, one map, one memcpy; staging buffers are pooled by size, so a step
   * that stages the same gradients every time allocates nothing. Pair with `upload` to write back.
   */
  async readInto(t: GpuTensor, dst: Float32Array | Int32Array): Promise<void> {
    this.live(t, "read");
    if (dst.length !== t.numel) throw new Error(`webgpu read '${t.storage.name}': host array of ${dst.length} for ${t.numel} elements`);
    const bytes = t.numel * 4;
    const dataSize = Math.ceil(bytes / 16) * 16;
    const staging = this.takeStaging(dataSize + 16);
    this.endPass();
    if (bytes > 0) this.enc().copyBufferToBuffer(t.storage.buffer, t.offset * 4, staging, 0, bytes);
    this.enc().copyBufferToBuffer(this.errors.storage.buffer, 0, staging, dataSize, 16);
    await this.finish(staging, dataSize, `read '${t.storage.name}'`, (range) => {
      new Uint8Array(dst.buffer, dst.byteOffset, bytes).set(new Uint8Array(range, 0, bytes));
    });
    this.stats.readBytes += bytes;
  }

  /** SYNC POINT: resolves when all enqueued work has completed (and checks the device error word). */
  async sync(): Promise<void> {
    const staging = this.takeStaging(16);
    this.endPass();
    this.enc().copyBufferToBuffer(this.errors.storage.buffer, 0, staging, 0, 16);
    await this.finish(staging, 0, "sync", () => {});
  }

  private takeStaging(size: number): GPUBuffer {
    return this.stagingPool.get(size)?.pop()
      ?? this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: `staging${size}` });
  }

  /**
   * Submits, waits for the staging map (the GPU wait), hands the mapped bytes to `take`, returns
   * the buffer to the pool, then throws if a kernel flagged bad input in the error word (copied
   * at `errAt`): bit 1 embedding id, bit 2 cross-entropy target.
   */
  private async finish(staging: GPUBuffer, errAt: number, where: string, take: (range: ArrayBuffer) => void): Promise<void> {
    this.flush();
    await staging.mapAsync(GPUMapMode.READ); // waits on the GPU
    const range = staging.getMappedRange(0, staging.size);
    take(range);
    const err = new Int32Array(range.slice(errAt, errAt + 16));
    staging.unmap();
    const pool = this.stagingPool.get(staging.size) ?? [];
    pool.push(staging);
    this.stagingPool.set(staging.size, pool);
    await this.profiler?.collect();
    this.throwIfError(where);
    if (err[0] !== 0) {
      const code = err[0]!, value = err[1]!;
      this.queue.writeBuffer(this.errors.storage.buffer, 0, new Uint32Array(4));
      const what = code & 1 ? `embeddingForward: token id ${value} outside [0,V)`
        : `crossEntropyFused: target ${value} outside [0,V) and not -100`;
      throw new Error(`webgpu ${where}: an earlier kernel saw bad input: ${what}`);
    }
  }

  private throwIfError(where: string): void {
    if (this.ctx.firstError === null) return;
    const msg = this.ctx.firstError;
    this.ctx.firstError = null;
    throw new Error(`webgpu: device error before ${where}: ${msg}`);
  }

  // ------------------------------------------------------------------ dispatch
  /**
   * Enqueue one dispatch. `tensors` bind to 1..n in order; `scalars` follow the per-tensor
   * offsets in the uniform P struct, typed by `fmt` ('u' u32, 'i' i32, 'f' f32).
   */
  dispatch(k: KernelRef, tensors: readonly GpuTensor[], fmt: string, scalars: readonly number[],
    groups: readonly [number, number, number]): void {
    if (groups[0] === 0 || groups[1] === 0 || groups[2] === 0) return;
    const base = this.pipelines.get(k, 0);
    if (base.writable.length !== tensors.length) {
      throw new Error(`webgpu ${k.file}:${k.entry}: expects ${base.writable.length} tensors, got ${tensors.length}`);
    }
    const { bound, promote, writeBack } = this.resolveAliases(k, base, tensors);
    const pl = promote ? this.pipelines.get(k, promote) : base;
    if (this.paramSlots === RING_SLOTS) this.flush();
    const slot = this.paramSlots++;
    let w = (slot * PARAM_SLOT) / 4;
    const windows = bound.map((t) => this.window(t));
    for (const win of windows) this.paramU32[w++] = win.elemOffset;
    for (let i = 0; i < fmt.length; i++, w++) {
      const v = scalars[i]!;
      if (fmt[i] === "f") this.paramF32[w] = v;
      else this.paramU32[w] = fmt[i] === "i" ? v | 0 : v >>> 0;
    }
    let key = `${pl.id}`;
    for (const win of windows) key += `|${win.id}:${win.offset}:${win.size}`;
    let bg = this.bindGroups.get(key);
    if (!bg) {
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.paramBuf, offset: 0, size: PARAM_SLOT } }];
      windows.forEach((win, i) => entries.push({ binding: i + 1, resource: { buffer: win.buffer, offset: win.offset, size: win.size } }));
      bg = this.device.createBindGroup({ layout: pl.layout, entries });
      this.bindGroups.set(key, bg);
    }
    if (this.profiler) {
      this.endPass();
      if (this.profiler.full) this.flush();
    }
    const pass = this.profiler ? this.profiler.pass(this.enc(), profileLabel(k)) : this.beginPass();
    pass.setPipeline(pl.pipeline);
    pass.setBindGroup(0, bg, [slot * PARAM_SLOT]);
    pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
    if (this.profiler) pass.end();
    this.stats.dispatches++;
    for (const [orig, scratch] of writeBack) this.copyBuffer(orig, scratch);
    if (++this.dispatches >= SUBMIT_EVERY) this.flush();
  }

  /** Submits everything encoded so far (parameters first: writeBuffer is ordered before the submit). */
  flush(): void {
    this.endPass();
    if (this.profiler && this.encoder) this.profiler.resolve(this.encoder);
    if (this.paramSlots > 0) this.queue.writeBuffer(this.paramBuf, 0, this.paramHost, 0, this.paramSlots * PARAM_SLOT);
    if (this.encoder) {
      this.queue.submit([this.encoder.finish()]);
      this.stats.submits++;
    }
    this.encoder = null;
    this.paramSlots = 0;
    this.dispatches = 0;
  }

  private enc(): GPUCommandEncoder {
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  private beginPass(): GPUComputePassEncoder {
    this.pass ??= this.enc().beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  private live(t: GpuTensor, what: string): void {
    if (t.storage.freed) throw new Error(`webgpu ${what}: tensor '${t.storage.name}' ${shapeStr(t.shape)} was freed`);
  }

  /** The bound byte window of a tensor view and its element offset inside that window. */
  private window(t: GpuTensor) {
    const start = t.offset * 4;
    const offset = Math.floor(start / this.align) * this.align;
    const size = Math.min(Math.max(4, start + t.numel * 4 - offset), t.storage.buffer.size - offset);
    return { buffer: t.storage.buffer, id: t.storage.id, offset, size, elemOffset: (start - offset) / 4 };
  }

  /**
   * Dawn refuses a buffer bound both writable and read-only in one dispatch, and any binding
   * whose byte window overlaps a writable one. Views of one flat buffer (activations, grads) meet
   * this often, so: a read binding that shares a buffer with a writable one is promoted to
   * read_write (a pipeline variant, no copy). Where windows overlap (an in-place op, out === inp,
   * or views closer than the offset alignment) one tensor goes through a scratch copy, copied
   * back after the dispatch if written: correct because copies and dispatches run in order.
   */
  private resolveAliases(k: KernelRef, pl: Pipeline, ts: readonly GpuTensor[]):
    { bound: GpuTensor[]; promote: number; writeBack: [GpuTensor, GpuTensor][] } {
    const n = ts.length;
    const bound = [...ts];
    const writeBack: [GpuTensor, GpuTensor][] = [];
    let scratchUsed = 0;
    for (let j = 0; j < n; j++) this.live(ts[j]!, `${k.file}:${k.entry}`);
    const overlap = (x: { offset: number; size: number }, y: { offset: number; size: number }) =>
      x.offset < y.offset + y.size && y.offset < x.offset + x.size;
    // Every binding of a buffer that is written in this dispatch ends up read_write, and Dawn
    // wants their windows disjoint: accept writers first, then readers; the rest move to scratch.
    const order = [...Array(n).keys()].sort((x, y) => Number(pl.writable[y]) - Number(pl.writable[x]));
    const accepted: number[] = [];
    let promote = 0;
    for (const j of order) {
      const b = ts[j]!;
      const written = ts.some((t, i) => pl.writable[i] && t.storage === b.storage);
      if (!written) continue;
      const clash = accepted.find((i) => ts[i]!.storage === b.storage && overlap(this.window(ts[i]!), this.window(b)));
      if (clash === undefined) {
        accepted.push(j);
        if (!pl.writable[j]) promote |= 1 << j;
        continue;
      }
      const a = ts[clash]!;
      if (pl.writable[j] && overlap({ offset: a.offset, size: a.numel }, { offset: b.offset, size: b.numel })) {
        throw new Error(`webgpu ${k.file}:${k.entry}: output tensors ${clash} and ${j} overlap in '${a.storage.name}'`);
      }
      bound[j] = this.scratchCopy(b, scratchUsed++);
      if (pl.writable[j]) writeBack.push([b, bound[j]!]);
    }
    return { bound, promote, writeBack };
  }

  private scratchCopy(t: GpuTensor, index: number): GpuTensor {
    const bytes = Math.max(16, Math.ceil((t.numel * 4) / 16) * 16);
    if (!this.scratch[index] || this.scratch[index]!.size < bytes) {
      // queued commands may still use the smaller buffer: submit them before destroying it
      if (this.scratch[index]) this.flush();
      this.scratch[index]?.destroy();
      this.scratch[index] = this.device.createBuffer({ size: bytes, usage: BUF_USAGE, label: `scratch${index}` });
      this.bindGroups = new Map();
    }
    const storage = new GpuStorage(t.dtype, t.numel, this.scratch[index]!, -1 - index, `scratch${index}`);
    const copy: GpuTensor = { shape: t.shape, dtype: t.dtype, numel: t.numel, storage, offset: 0 };
    this.copyBuffer(copy, t);
    this.stats.scratchCopies++;
    return copy;
  }
}

/** "matmul:main[64u]": file without .wgsl, entry, and the tile size of matmul variants. */
function profileLabel(k: KernelRef): string {
  return `${k.file.replace(".wgsl", "")}:${k.entry}${k.defines?.BM ? `[${k.defines.BM}]` : ""}`;
}

/** Workgroup grid for n items of `wg` threads: x <= 65535, the shader folds y back in. */
export function grid(n: number, wg: number): [number, number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= 65535) return [groups, 1, 1];
  return [65535, Math.ceil(groups / 65535), 1];
}
