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

import { readFileSync } from "node:fs";
import type { BackendName, DType, HostArray, Storage, Tensor } from "../tensor.ts";
import { numelOf, shapeStr } from "../tensor.ts";
import type { GpuContext } from "./device.ts";

export class GpuStorage implements Storage {
  readonly backend: BackendName = "webgpu";
  freed = false;
  constructor(readonly dtype: DType, readonly numel: number, readonly buffer: GPUBuffer,
    readonly id: number, readonly name: string) {}
}

export interface GpuTensor<D extends DType = DType> extends Tensor<D> {
  readonly storage: GpuStorage;
}

/** A compute entry point: a .wgsl file beside this one, its entry, pipeline-overridable constants. */
export interface KernelRef {
  file: string;
  entry: string;
  constants?: Record<string, number>;
}

interface Pipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  writable: boolean[]; // per tensor binding (1..n)
  id: number;
}

const PARAM_SLOT = 256; // bytes per dispatch in the uniform ring (>= minUniformBufferOffsetAlignment)
const RING_SLOTS = 1024;
const SUBMIT_EVERY = 128; // dispatches per command buffer: lets the GPU start while we encode

// GPUBufferUsage.STORAGE | COPY_SRC | COPY_DST (the globals exist only after bun-webgpu's setupGlobals).
const BUF_USAGE = 0x80 | 0x4 | 0x8;

export class Runtime {
  readonly device: GPUDevice;
  private readonly queue: GPUQueue;
  private readonly align: number; // bytes, storage binding offset alignment
  private readonly sources = new Map<string, string>();
  private readonly pipelines = new Map<string, Pipeline>();
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
  private firstError: string | null = null;
  /** Counters for the bench and tests: dispatches and host<->device bytes. */
  readonly stats = { dispatches: 0, submits: 0, readBytes: 0, uploadBytes: 0 };

  constructor(readonly ctx: GpuContext) {
    this.device = ctx.device;
    this.queue = ctx.device.queue;
    this.align = Math.max(4, ctx.limits.minStorageBufferOffsetAlignment);
    this.paramBuf = this.device.createBuffer({ size: this.paramHost.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      this.firstError ??= ev.error.message;
    };
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
    this.queue.writeBuffer(dst.storage.buffer, dst.offset * 4, src.buffer, src.byteOffset, src.byteLength);
    this.stats.uploadBytes += src.byteLength;
  }

  /** Enqueue a buffer-to-buffer copy (same byte count). */
  copyBuffer(dst: GpuTensor, src: GpuTensor): void {
    this.endPass();
    this.enc().copyBufferToBuffer(src.storage.buffer, src.offset * 4, dst.storage.buffer, dst.offset * 4, dst.numel * 4);
  }

  // ------------------------------------------------------------------ sync points
  /** SYNC POINT: copies `t` to a mapped staging buffer after all enqueued work, and waits. */
  async read<D extends DType>(t: GpuTensor<D>): Promise<HostArray<D>> {
    this.live(t, "read");
    const bytes = t.numel * 4;
    const staging = this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    if (bytes > 0) {
      this.endPass();
      this.enc().copyBufferToBuffer(t.storage.buffer, t.offset * 4, staging, 0, bytes);
    }
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const out = t.dtype === "i32"
      ? new Int32Array(staging.getMappedRange(0, Math.max(16, Math.ceil(bytes / 16) * 16)).slice(0, bytes))
      : new Float32Array(staging.getMappedRange(0, Math.max(16, Math.ceil(bytes / 16) * 16)).slice(0, bytes));
    staging.unmap();
    staging.destroy();
    this.stats.readBytes += bytes;
    this.throwIfError("read");
    return out as HostArray<D>;
  }

  /** SYNC POINT: resolves when all enqueued work has completed. */
  async sync(): Promise<void> {
    this.flush();
    await this.queue.onSubmittedWorkDone();
    this.throwIfError("sync");
  }

  private throwIfError(where: string): void {
    if (this.firstError === null) return;
    const msg = this.firstError;
    this.firstError = null;
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
    const pl = this.pipeline(k);
    if (pl.writable.length !== tensors.length) {
      throw new Error(`webgpu ${k.file}:${k.entry}: expects ${pl.writable.length} tensors, got ${tensors.length}`);
    }
    const bound = this.resolveAliases(k, pl, tensors);
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
    const pass = this.beginPass();
    pass.setPipeline(pl.pipeline);
    pass.setBindGroup(0, bg, [slot * PARAM_SLOT]);
    pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
    this.stats.dispatches++;
    if (++this.dispatches >= SUBMIT_EVERY) this.flush();
  }

  /** Submits everything encoded so far (parameters first: writeBuffer is ordered before the submit). */
  flush(): void {
    this.endPass();
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
   * WebGPU forbids a writable binding that overlaps another binding of the same buffer. An op
   * allowed to run in place (out === inp) gets its input through a scratch copy: one extra copy
   * in that case only, correct because copies and dispatches execute in encoding order.
   */
  private resolveAliases(k: KernelRef, pl: Pipeline, ts: readonly GpuTensor[]): GpuTensor[] {
    const out = [...ts];
    let scratchUsed = 0;
    for (let i = 0; i < ts.length; i++) {
      this.live(ts[i]!, `${k.file}:${k.entry}`);
      if (!pl.writable[i]) continue;
      const a = ts[i]!;
      for (let j = 0; j < ts.length; j++) {
        const b = ts[j]!;
        if (j === i || b.storage !== a.storage) continue;
        const overlap = a.offset < b.offset + b.numel && b.offset < a.offset + a.numel;
        if (!overlap) continue;
        if (pl.writable[j]) throw new Error(`webgpu ${k.file}:${k.entry}: writable tensors ${i} and ${j} overlap`);
        out[j] = this.scratchCopy(b, scratchUsed++);
      }
    }
    return out;
  }

  private scratchCopy(t: GpuTensor, index: number): GpuTensor {
    const bytes = Math.max(16, Math.ceil((t.numel * 4) / 16) * 16);
    if (!this.scratch[index] || this.scratch[index]!.size < bytes) {
      this.scratch[index]?.destroy();
      this.scratch[index] = this.device.createBuffer({ size: bytes, usage: BUF_USAGE, label: `scratch${index}` });
      this.bindGroups = new Map();
    }
    const storage = new GpuStorage(t.dtype, t.numel, this.scratch[index]!, -1 - index, `scratch${index}`);
    const copy: GpuTensor = { shape: t.shape, dtype: t.dtype, numel: t.numel, storage, offset: 0 };
    this.copyBuffer(copy, t);
    return copy;
  }

  // ------------------------------------------------------------------ pipelines (created once, cached)
  private pipeline(k: KernelRef): Pipeline {
    const key = `${k.file}:${k.entry}:${JSON.stringify(k.constants ?? {})}`;
    const hit = this.pipelines.get(key);
    if (hit) return hit;
    let code = this.sources.get(k.file);
    if (code === undefined) {
      code = readFileSync(new URL(`./${k.file}`, import.meta.url), "utf8");
      this.sources.set(k.file, code);
    }
    const writable: boolean[] = [];
    const entries: GPUBindGroupLayoutEntry[] = [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform", hasDynamicOffset: true } },
    ];
    for (const m of code.matchAll(/@binding\((\d+)\)\s*var<storage,\s*(read_write|read)>/g)) {
      const b = Number(m[1]);
      if (b !== writable.length + 1) throw new Error(`webgpu ${k.file}: storage bindings must be 1..n in order (found ${b})`);
      writable.push(m[2] === "read_write");
      entries.push({ binding: b, visibility: GPUShaderStage.COMPUTE, buffer: { type: m[2] === "read_write" ? "storage" : "read-only-storage" } });
    }
    const layout = this.device.createBindGroupLayout({ entries });
    const module = this.device.createShaderModule({ code, label: k.file });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: k.entry, constants: k.constants },
      label: `${k.file}:${k.entry}`,
    });
    const p: Pipeline = { pipeline, layout, writable, id: this.pipelines.size };
    this.pipelines.set(key, p);
    return p;
  }

  /** Compiles a kernel now and reports WGSL/validation errors (tests call this; pipelines are lazy otherwise). */
  async check(k: KernelRef): Promise<void> {
    this.device.pushErrorScope("validation");
    this.pipeline(k);
    const err = await this.device.popErrorScope();
    if (err) throw new Error(`webgpu ${k.file}:${k.entry}: ${err.message}`);
  }
}

/** Workgroup grid for n items of `wg` threads: x <= 65535, the shader folds y back in. */
export function grid(n: number, wg: number): [number, number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= 65535) return [groups, 1, 1];
  return [65535, Math.ceil(groups / 65535), 1];
}
