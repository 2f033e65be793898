// FSDP's gathered-parameter and full-gradient buffers: ranges of a few large shared f32 buffers,
// handed out first fit and merged again when released, so a buffer freed by one unit serves units
// of other sizes (the tied embedding's 139 MB buffer, free after the head, holds three decoder
// layers' buffers in backward). Size-class pools would keep one buffer per size alive instead:
// the peak would be the sum of each class's own peak. Small units (under 1/16 of the largest)
// take ranges of buffers of their own, so they never split a large free range.
// On the cpu backends a free range is also lent to the kernels' large scratch for one op call
// (ScratchLender: the tied head's logits chunk, while the head's forward leaves a layer-sized
// range free), so that scratch costs no memory of its own.
// On a device backend (WebGPU) each large buffer is a device tensor with a host mirror
// (staging.ts); a range is pulled and pushed on its own, so collectives moving one range's mirror
// never race with copies of another's.
import type { Kernels, ScratchLender, Tensor } from "../kernels/index.ts";
import { Mirror } from "./staging.ts";

type F32 = Tensor<"f32">;

/** A range [off, off + len) of buffer `buf` (elements). */
export interface Range {
  readonly buf: number;
  readonly off: number;
  readonly len: number;
}

export class FsdpBuffers implements ScratchLender {
  private bufs: Mirror[] = [];
  private lent = new Map<Float32Array, Range>();
  private small: boolean[] = [];
  // free ranges per buffer, sorted by offset, merged with their neighbours
  private freeOf: { off: number; len: number }[][] = [];
  private views = new Map<string, F32>();

  /** `largest`: elements of the largest request (the biggest padded unit). */
  constructor(private k: Kernels, private largest: number) {}

  acquire(len: number): Range {
    const small = len * 16 < this.largest;
    for (let b = 0; b < this.bufs.length; b++) {
      if (this.small[b] !== small) continue;
      if (this.freeOf[b].some((f) => f.len >= len)) return this.take(b, len);
    }
    // none fits: a new buffer (allocated once; reused from then on), the first large one of the
    // largest unit's size (it holds every smaller unit's ranges in turn), later ones of this size
    const size = !small && !this.small.some((x) => !x) ? Math.max(len, this.largest) : len;
    this.bufs.push(new Mirror(this.k, this.k.alloc([size], "f32", { name: `fsdp.buffer${this.bufs.length}` }), "fsdp"));
    this.small.push(small);
    this.freeOf.push(size > len ? [{ off: len, len: size - len }] : []);
    return { buf: this.bufs.length - 1, off: 0, len };
  }

  /** ScratchLender (kernels/ops.ts): a free range of a buffer that exists, as host memory (cpu:
   *  the buffer itself), held for one kernel call; null when none is free (never allocates). */
  borrow(floats: number): Float32Array | null {
    for (let b = 0; b < this.bufs.length; b++) {
      if (this.bufs[b].staged || !this.freeOf[b].some((f) => f.len >= floats)) continue;
      const r = this.take(b, floats);
      const a = this.host(r);
      this.lent.set(a, r);
      return a;
    }
    return null;
  }

  giveBack(a: Float32Array): void {
    const r = this.lent.get(a);
    if (!r) throw new Error(`fsdp buffers: giveBack of ${a.length} floats that were not lent`);
    this.lent.delete(a);
    this.release(r);
  }

  release(r: Range): void {
    const fr = this.freeOf[r.buf];
    let i = fr.findIndex((f) => f.off > r.off);
    if (i < 0) i = fr.length;
    fr.splice(i, 0, { off: r.off, len: r.len });
    // merge with the next, then with the previous range
    if (i + 1 < fr.length && fr[i].off + fr[i].len === fr[i + 1].off) fr.splice(i, 2, { off: fr[i].off, len: fr[i].len + fr[i + 1].len });
    if (i > 0 && fr[i - 1].off + fr[i - 1].len === fr[i].off) fr.splice(i - 1, 2, { off: fr[i - 1].off, len: fr[i - 1].len + fr[i].len });
  }

  /** The first free range of buffer b holding len elements (there is one): its start, taken. */
  private take(b: number, len: number): Range {
    const fr = this.freeOf[b];
    const i = fr.findIndex((f) => f.len >= len);
    const f = fr[i];
    if (f.len === len) fr.splice(i, 1);
    else fr[i] = { off: f.off + len, len: f.len - len };
    return { buf: b, off: f.off, len };
  }

  /** (len) host view of a range: what the collectives move. */
  host(r: Range): Float32Array {
    return this.bufs[r.buf].host.subarray(r.off, r.off + r.len);
  }

  /** SYNC POINT (device): the range's host mirror <- its device memory after the work enqueued so
   *  far; null on cpu (one memory), which PostOrder.run takes as "post now". */
  pull(r: Range): Promise<void> | null {
    const b = this.bufs[r.buf];
    return b.staged ? this.k.readInto(this.tensor(r, r.len, -1), this.host(r)) : null;
  }

  /** Enqueue the range's device memory <- its host mirror (device); nothing on cpu. */
  push(r: Range): void {
    if (this.bufs[r.buf].staged) this.k.upload(this.tensor(r, r.len, -1), this.host(r));
  }

  /** (n) tensor view at the start of a range for unit u (-1: the whole range, for staging), cached
   *  (the model caches its views per tensor). */
  tensor(r: Range, n: number, u: number): F32 {
    const key = `${r.buf}:${r.off}:${n}:${u}`;
    let v = this.views.get(key);
    if (!v) this.views.set(key, (v = this.k.view(this.bufs[r.buf].t, r.off, [n])));
    return v;
  }

  /** Elements allocated (the high-water mark: buffers are never freed). */
  get numel(): number {
    return this.bufs.reduce((a, b) => a + b.t.numel, 0);
  }
}
