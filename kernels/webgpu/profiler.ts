/// <reference types="@webgpu/types" />
// Per-kernel GPU time from timestamp queries (feature "timestamp-query"), for benchmarks only:
// with tuning.profile each dispatch gets its own compute pass whose beginning and end write a
// timestamp; flush() resolves them into a staging buffer, the next sync point maps it and adds
// the durations to `totals` by kernel label. Separate passes serialise the GPU a little more, so
// profiled steps run slower than normal ones: read the shares, not the absolute step time.

const CAPACITY = 2048; // dispatches between flushes (2 queries each)

export class GpuProfiler {
  private readonly querySet: GPUQuerySet;
  private readonly resolveBuf: GPUBuffer;
  private labels: string[] = [];
  private pending: { staging: GPUBuffer; labels: string[] }[] = [];
  /** kernel label -> total GPU milliseconds and dispatch count */
  readonly totals = new Map<string, { ms: number; n: number }>();

  constructor(private readonly device: GPUDevice) {
    this.querySet = device.createQuerySet({ type: "timestamp", count: 2 * CAPACITY });
    this.resolveBuf = device.createBuffer({ size: 16 * CAPACITY, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  }

  get full(): boolean {
    return this.labels.length >= CAPACITY;
  }

  /** A compute pass of one dispatch, timed. The caller ends it right after the dispatch. */
  pass(enc: GPUCommandEncoder, label: string): GPUComputePassEncoder {
    const i = this.labels.length;
    this.labels.push(label);
    return enc.beginComputePass({ timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
  }

  /** Encodes the resolve of this batch's timestamps (call before the encoder is finished). */
  resolve(enc: GPUCommandEncoder): void {
    if (this.labels.length === 0) return;
    const bytes = this.labels.length * 16;
    enc.resolveQuerySet(this.querySet, 0, this.labels.length * 2, this.resolveBuf, 0);
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.copyBufferToBuffer(this.resolveBuf, 0, staging, 0, bytes);
    this.pending.push({ staging, labels: this.labels });
    this.labels = [];
  }

  /** At a sync point, after the submit: adds the resolved durations to `totals`. */
  async collect(): Promise<void> {
    const pending = this.pending;
    this.pending = [];
    for (const { staging, labels } of pending) {
      await staging.mapAsync(GPUMapMode.READ); // waits on the GPU
      const t = new BigUint64Array(staging.getMappedRange().slice(0));
      staging.unmap();
      staging.destroy();
      labels.forEach((label, i) => {
        const ms = Number(t[2 * i + 1]! - t[2 * i]!) / 1e6;
        const e = this.totals.get(label) ?? { ms: 0, n: 0 };
        e.ms += Math.max(0, ms);
        e.n++;
        this.totals.set(label, e);
      });
    }
  }

  /** The kernels by total time, one line each. */
  table(divide = 1): string[] {
    const rows = [...this.totals].sort((a, b) => b[1].ms - a[1].ms);
    const all = rows.reduce((s, [, e]) => s + e.ms, 0);
    return rows.map(([label, e]) => `  ${label.padEnd(34)} ${(e.ms / divide).toFixed(2).padStart(9)} ms ${((100 * e.ms) / all).toFixed(1).padStart(5)}%  (${e.n} dispatches)`);
  }
}
