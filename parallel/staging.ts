// Host staging of the tensors the data-parallel plans move through the mesh. The mesh's
// collectives read and write SharedArrayBuffer-backed host arrays (its transport thread touches
// them). On the CPU backend a tensor's own memory is such an array, so staging costs nothing and
// every collective is posted at once, as before. On a device backend (WebGPU) each staged tensor
// has a host mirror:
//   pull  device -> mirror: one copy into a mapped staging buffer, waited for without blocking the
//         compute thread (the ops enqueued after it keep running on the GPU meanwhile)
//   push  mirror -> device: an upload enqueued behind the work already submitted
// so a DDP gradient all-reduce is pull -> ring all-reduce on the host -> push, an FSDP all-gather
// is pull(shard) -> all-gather -> push(full unit), a reduce-scatter pull(full grad) -> reduce-
// scatter into the shard's mirror (pushed once at syncGrads). The copies of unit u overlap the
// compute of the next unit; the hooks wait only where a unit needs its gathered params.
//
// The mesh matches a group's ops by sequence number, so every rank must post them in the same
// order. A pull completes whenever the GPU gets there, so collectives that wait for one are
// posted through `PostOrder`: each after its own pull AND after the previous one was posted.
// One PostOrder per rank (parallel/plan.ts) serves every plan: Ulysses', expert parallelism's and
// FSDP's collectives can share a group (e.g. all of them on "world" at ulysses = world size), and
// only one program order keeps their sequence numbers equal on every rank.
//
// Exchanges whose tensors change with the batch (Ulysses' and the experts' all-to-alls, over
// views of T rows) stage through `pullOf` / `landingOf` + `pushTo` instead of a Mirror: the same
// two copies, into scratch host arrays the caller reuses.
import type { Kernels, Tensor } from "../kernels/index.ts";
import { sharedF32 } from "../mesh/index.ts";

type F32 = Tensor<"f32">;
const DONE: Promise<void> = Promise.resolve();

/** A tensor and the host array the mesh moves for it (the tensor's own memory on cpu). */
export class Mirror {
  readonly host: Float32Array;
  /** True when `host` is a separate copy (device backend): pull/push move bytes. */
  readonly staged: boolean;

  constructor(private k: Kernels, readonly t: F32, what: string) {
    this.staged = !t.host;
    if (t.host && !(t.host.buffer instanceof SharedArrayBuffer)) {
      throw new Error(`${what}: host memory of ${t.shape} is not SharedArrayBuffer-backed (cpu tensors for the mesh need it)`);
    }
    this.host = t.host ? (t.host as Float32Array) : sharedF32(t.numel);
  }

  /** SYNC POINT (device): host <- tensor after all work enqueued so far. null on cpu (one memory:
   *  nothing to wait for), which PostOrder.run takes as "post now". */
  pull(): Promise<void> | null {
    return pullOf(this.k, this.t, this.host).ready;
  }

  /** Enqueue tensor <- host (device); nothing on cpu, where they are one memory. */
  push(): void {
    pushTo(this.k, this.t, this.host);
  }
}

/** The host array holding tensor t's values for the mesh: on cpu t's own memory (ready null:
 *  nothing to wait for); on a device the first t.numel elements of `scratch` (shared memory),
 *  filled by a readback of t after all work enqueued so far. SYNC POINT (device), awaited without
 *  blocking the compute thread. */
export function pullOf(k: Kernels, t: F32, scratch: Scratch): { host: Float32Array; ready: Promise<void> | null } {
  if (t.host) return { host: t.host as Float32Array, ready: null };
  const host = scratchFor(t, scratch);
  return { host, ready: k.readInto(t, host) };
}

/** Where the mesh (or host code) writes tensor t's new values: on cpu t's own memory; on a device
 *  the first t.numel elements of `scratch`, which `pushTo(k, t, ...)` then uploads. */
export function landingOf(t: F32, scratch: Scratch): Float32Array {
  return t.host ? (t.host as Float32Array) : scratchFor(t, scratch);
}

/** A host array of at least t.numel values, or a function giving one (called on a device only). */
export type Scratch = Float32Array | ((n: number) => Float32Array);

function scratchFor(t: F32, scratch: Scratch): Float32Array {
  const a = typeof scratch === "function" ? scratch(t.numel) : scratch;
  if (a.length < t.numel) throw new Error(`staging: a scratch of ${a.length} values for a tensor of ${t.numel}`);
  return a.subarray(0, t.numel);
}

/** Enqueue t <- host (a device tensor: an upload behind the work already submitted, `host` free
 *  for reuse at return); nothing on cpu, where `host` is t's own memory (landingOf, Mirror). */
export function pushTo(k: Kernels, t: F32, host: Float32Array): void {
  if (!t.host && t.numel > 0) k.upload(t, host);
}

/** Host scratch for staged exchanges: n shared f32 on a device backend, none on cpu (unused there). */
export function stagingScratch(k: Kernels, n: number): Float32Array {
  return k.backend === "cpu" ? new Float32Array(0) : sharedF32(n);
}

/** Posts one group's staged collectives in program order (see the header). */
export class PostOrder {
  private last: Promise<void> = DONE;

  /** `post()` once `ready` resolved and every earlier job of this order was posted; returns its
   *  promise. Unstaged work (`ready` null, nothing pending) is posted synchronously. */
  run<T>(ready: Promise<void> | null, post: () => Promise<T>): Promise<T> {
    if (ready === null && this.last === DONE) return post();
    const posted = Promise.all([this.last, ready ?? DONE]).then(() => ({ op: post() }));
    // the chain only orders posts: a failed pull or post is reported by this job's own promise,
    // and a later job still posts (its peers then fail the group by name)
    this.last = posted.then(() => undefined, () => undefined);
    return posted.then((x) => x.op);
  }
}
