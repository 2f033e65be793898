// The data loader on its own thread (a Bun Worker), prefetching whole steps so the compute
// thread never waits for data in steady state. Message API (all promises):
//   const w = await DataLoaderWorker.start(cfg, opts, { prefetch: 2 });
//   await w.nextStep()   -> StepBatch | null   (typed arrays transferred, not copied)
//   w.stalls             -> how many steps were not ready when asked for
//   await w.state()      -> LoaderState of the position after the last step handed out
//   await w.restore(s)   -> drops what was prefetched, restores, prefetches again
//   await w.close()
// Prefetched steps have advanced the loader, so the worker keeps, with each queued step, the
// state taken just before it was made: state() returns the one of the first unconsumed step.
import type { StepBatch } from "./batch.ts";
import type { DataLoaderConfig, LoaderLog, LoaderOptions, LoaderInfo } from "./loader.ts";
import type { LoaderState } from "./state.ts";

export type WorkerRequest =
  | { id: number; type: "init"; cfg: DataLoaderConfig; opts: Omit<LoaderOptions, "log">; prefetch: number }
  | { id: number; type: "next" }
  | { id: number; type: "state" }
  | { id: number; type: "restore"; state: LoaderState | LoaderState[] };

export type WorkerReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: string }
  | { id: -1; log: "info" | "warn"; obj: object; msg: string };

export class DataLoaderWorker {
  private nextId = 1;
  private waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  info!: LoaderInfo;

  private constructor(private w: Worker, private log?: LoaderLog) {
    w.onmessage = (ev: MessageEvent<WorkerReply>) => {
      const m = ev.data;
      if ("log" in m) { this.log?.[m.log](m.obj, m.msg); return; }
      const p = this.waiting.get(m.id);
      if (!p) return;
      this.waiting.delete(m.id);
      if (m.ok) p.resolve(m.value); else p.reject(new Error(m.error));
    };
    w.onerror = (e) => {
      const err = new Error(`data loader worker died: ${e.message}`);
      for (const p of this.waiting.values()) p.reject(err);
      this.waiting.clear();
    };
  }

  private call<T>(req: Omit<WorkerRequest, "id"> & { type: WorkerRequest["type"] }): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.w.postMessage({ ...req, id });
    });
  }

  /** Starts the thread, builds the loader there (indexing, tokenizer) and starts prefetching `prefetch` steps. */
  static async start(cfg: DataLoaderConfig, opts: LoaderOptions, o: { prefetch?: number } = {}): Promise<DataLoaderWorker> {
    const w = new Worker(new URL("./loader_worker.ts", import.meta.url).href);
    const dw = new DataLoaderWorker(w, opts.log);
    const { log: _log, ...plain } = opts;
    try {
      dw.info = await dw.call<LoaderInfo>({ type: "init", cfg, opts: plain, prefetch: o.prefetch ?? 2 } as any);
    } catch (e) {
      w.terminate(); // a loader that cannot start (bad path, empty data) leaves no thread behind
      throw e;
    }
    return dw;
  }

  /** Steps that were not ready when asked for (the compute thread waited); 0 in steady state. */
  stalls = 0;

  async nextStep(): Promise<StepBatch | null> {
    const r = await this.call<{ batch: StepBatch | null; prefetched: boolean }>({ type: "next" });
    if (!r.prefetched && r.batch) this.stalls++;
    return r.batch;
  }
  state(): Promise<LoaderState> { return this.call({ type: "state" }); }
  restore(state: LoaderState | LoaderState[]): Promise<void> { return this.call({ type: "restore", state } as any); }
  async close(): Promise<void> {
    this.w.terminate();
    for (const p of this.waiting.values()) p.reject(new Error("data loader worker closed"));
    this.waiting.clear();
  }
}
