// Worker-thread side of DataLoaderWorker (worker.ts): owns one DataLoader and a queue of
// prefetched steps. Requests are handled one at a time, in order, on a promise chain; between
// requests the thread keeps the queue `prefetch` steps deep.
import type { StepBatch } from "./batch.ts";
import { DataLoader } from "./loader.ts";
import type { LoaderState } from "./state.ts";
import type { WorkerReply, WorkerRequest } from "./worker.ts";

declare const self: Worker;

interface Ready { batch: StepBatch | null; before: LoaderState; error?: string }
let loader: DataLoader | null = null;
let depth = 2;
let queue: Ready[] = [];
let chain: Promise<unknown> = Promise.resolve();
let filling = false;

const post = (m: WorkerReply, transfer: ArrayBufferLike[] = []) => self.postMessage(m, transfer as any);

// Produce one more step into the queue (runs on the chain, so never beside a request).
async function produceOne(): Promise<void> {
  if (!loader) return;
  const before = loader.state();
  try {
    queue.push({ batch: await loader.nextStep(), before });
  } catch (e) {
    queue.push({ batch: null, before, error: (e as Error).message }); // reported by the next "next"
  }
}

function topUp() {
  if (filling || !loader) return;
  if (queue.length >= depth || queue[queue.length - 1]?.batch === null) return;
  filling = true;
  chain = chain.then(produceOne).finally(() => { filling = false; topUp(); });
}

async function handle(req: WorkerRequest): Promise<void> {
  try {
    switch (req.type) {
      case "init": {
        depth = Math.max(1, req.prefetch);
        loader = new DataLoader(req.cfg, {
          ...req.opts,
          log: { info: (obj, msg) => post({ id: -1, log: "info", obj, msg }), warn: (obj, msg) => post({ id: -1, log: "warn", obj, msg }) },
        });
        post({ id: req.id, ok: true, value: await loader.plan() });
        break;
      }
      case "next": {
        const prefetched = queue.length > 0; // false: the compute thread is waiting on us
        if (!prefetched) await produceOne();
        const r = queue.shift()!;
        if (r.batch === null) queue.unshift(r); // keep answering null (or the error)
        if (r.error) throw new Error(r.error);
        const transfer = (r.batch?.microBatches ?? []).flatMap((m) => [m.inputIds.buffer, m.labels.buffer, m.positionIds.buffer, m.cuSeqlens.buffer,
          ...(m.pixelValues ? [m.pixelValues.buffer] : []), ...(m.imageGridThw ? [m.imageGridThw.buffer] : [])]);
        post({ id: req.id, ok: true, value: { batch: r.batch, prefetched } }, transfer);
        break;
      }
      case "state":
        post({ id: req.id, ok: true, value: queue[0]?.before ?? loader!.state() });
        break;
      case "restore":
        queue = [];
        await loader!.restore(req.state);
        post({ id: req.id, ok: true, value: null });
        break;
    }
  } catch (e) {
    post({ id: req.id, ok: false, error: (e as Error).message });
  }
}

self.onmessage = (ev: MessageEvent<WorkerRequest>) => {
  chain = chain.then(() => handle(ev.data)).then(topUp);
};
