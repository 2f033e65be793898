// The rank side of an async save (the checkpoint actor): copy the shard into staging memory,
// hand it to the writer thread, return to training. At most one save is in flight: a second
// save() first waits for the previous one (that wait counts as stall, and is reported).

import type { Piece } from "./plan.ts";
import { encodeExtra } from "./format.ts";
import { type RankReport, layoutRank, stagePieces } from "./rank_writer.ts";
import type { WriterReply, WriterRequest } from "./writer_worker.ts";

export interface SaveRequest {
  /** output_dir/checkpoints/global_step_N */
  dir: string;
  step: number;
  /** The job's epoch (generation): put in the file names so a fenced-out writer cannot clobber them. */
  epoch?: number;
  /** This rank's pieces of parameters and optimizer state (read during save() only). */
  pieces: Piece[];
  /** step, scheduler, dataloader state, RNG, counters: anything encodeExtra takes. */
  extra: unknown;
  /** Fault injection for tests: the writer stops after this many bytes and emits "paused". */
  pauseAfterBytes?: number;
}

export interface SaveTicket {
  /** Milliseconds save() kept the caller: waiting for the previous save + staging copy. */
  stallMs: number;
  /** Resolves when every file of this rank is fsynced; rejects naming the rank on failure. */
  durable: Promise<RankReport>;
}

export class AsyncSaver {
  private worker: Worker;
  private staging = new SharedArrayBuffer(0);
  private inflight: Promise<unknown> | null = null;
  private nextId = 1;
  private waiting = new Map<number, { resolve: (r: RankReport) => void; reject: (e: Error) => void }>();
  /** Called when the writer pauses at pauseAfterBytes (kill tests). */
  onPaused: (() => void) | null = null;

  constructor(readonly rank: number) {
    this.worker = new Worker(new URL("./writer_worker.ts", import.meta.url).href);
    this.worker.onmessage = (ev: MessageEvent<WriterReply>) => this.onReply(ev.data);
    this.worker.onerror = (ev) => this.failAll(new Error(`rank ${rank}: checkpoint writer thread crashed: ${ev.message}`));
  }

  /** Allocate (and touch) staging memory ahead of the first save, so it is not part of a stall. */
  reserve(bytes: number): void {
    if (this.staging.byteLength >= bytes) return;
    this.staging = new SharedArrayBuffer(bytes);
    new Uint8Array(this.staging).fill(0); // fault the pages in now, not during the first copy
  }

  async save(req: SaveRequest): Promise<SaveTicket> {
    const t0 = performance.now();
    if (this.inflight) await this.inflight.catch(() => {}); // sync point: at most one save in flight
    const layout = layoutRank(this.rank, req.step, req.pieces, req.epoch);
    if (this.staging.byteLength < layout.stagingBytes) this.reserve(layout.stagingBytes);
    stagePieces(layout, req.pieces, new Float32Array(this.staging, 0, layout.stagingBytes >> 2));
    const extraText = encodeExtra(req.extra);
    const id = this.nextId++;
    const durable = new Promise<RankReport>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    durable.catch(() => {}); // the owner awaits it; a failure must not also crash the process as unhandled
    this.inflight = durable;
    const msg: WriterRequest = { type: "write", id, dir: req.dir, layout, staging: this.staging, extraText, pauseAfterBytes: req.pauseAfterBytes };
    this.worker.postMessage(msg);
    return { stallMs: performance.now() - t0, durable };
  }

  /** Wait for the save in flight, if any (end of training, before exit). */
  async flush(): Promise<void> {
    if (this.inflight) await this.inflight.catch(() => {});
  }

  async close(): Promise<void> {
    await this.flush();
    this.worker.terminate();
  }

  private onReply(m: WriterReply): void {
    switch (m.type) {
      case "paused":
        this.onPaused?.();
        return;
      case "done":
      case "error": {
        const w = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        if (!w) return;
        if (m.type === "done") w.resolve(m.report);
        else w.reject(new Error(`rank ${this.rank}: checkpoint save failed: ${m.message}`));
        return;
      }
      default: {
        const never: never = m;
        throw new Error(`saver: unknown writer reply ${JSON.stringify(never)}`);
      }
    }
  }

  private failAll(e: Error): void {
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }
}
