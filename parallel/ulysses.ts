// Ulysses sequence parallelism (DeepSpeed-Ulysses, as VeOmni): the core attention of a P-rank
// group. Each rank holds Tl = Tp/P rows of a padded row of Tp tokens (parallel/ulysses_data.ts)
// and all heads; around the kernel, all-to-alls swap that for all Tp rows and NH/P heads:
//   q (Tl, NH, HS) --a2a--> (Tp, NH/P, HS)     k, v (Tl, NKV, HS) --a2a--> (Tp, hkv, HS)
//   varlen causal attention over the whole row (cu_seqlens of the padded row), local heads
//   att (Tp, NH/P, HS) --a2a--> (Tl, NH, HS), then o_proj on this rank's rows.
// Rank j of the group gets query heads [j*NH/P, (j+1)*NH/P). GQA: with P <= NKV it gets KV heads
// [j*NKV/P, ...) (NKV % P == 0); with P > NKV every KV head is repeated P/NKV times first (VeOmni's
// expandKV, P % NKV == 0), so rank j gets the one KV head j*NKV/P its query heads read. Backward
// runs the same exchanges in reverse; repeated KV heads' gradients are summed.
// Layouts on the wire: the send buffer of an exchange to heads is (P, Tl, h*HS), chunk j for rank
// j; what arrives is (P, Tl, h*HS) = (Tp, h*HS) in row order, the head layout itself.
// Sync (VeOmni's default) moves q, k, v one after another once all three are projected; async
// (train.ulysses_async) starts each one's all-to-all as soon as it is projected, so k's and v's
// projection GEMMs run while q (then k) is on the wire, and in backward hands each gradient back
// as it arrives, so v's dgrad GEMMs run while q's and k's gradients travel. Same arithmetic, same
// order of every sum: the two give bitwise-equal results.
// On a device backend (WebGPU) every exchange is staged through host memory (staging.ts): the
// tensor it sends is read back (q, k, v, att, datt, dq/dk/dv in head layout; the compute thread
// does not block, async mode's next projection is already enqueued), packed on the host, moved,
// unpacked and uploaded. The packs and the wire layouts are the cpu path's, so are the results.
import type { Kernels, Tensor } from "../kernels/index.ts";
import { sharedF32, type CommGroup } from "../mesh/index.ts";
import type { AttentionCore, AttnSaved, BatchInputs, DecoderConfig } from "../models/index.ts";
import { landingOf, PostOrder, pullOf, pushTo, stagingScratch } from "./staging.ts";

type F32 = Tensor<"f32">;
type Which = "q" | "k" | "v";

/** Per saved-activation set: the head-layout tensors backward needs, capacity Tp_max rows. */
interface HeadSaved { q: F32; k: F32; v: F32; att: F32; lse: F32 }

/** Local head counts of a P-rank group, or a one-line refusal naming the fields and counts. */
export function ulyssesHeads(P: number, NH: number, NKV: number): { hq: number; hkv: number; rep: number } {
  if (NH % P !== 0) throw new Error(`train.ulysses_parallel_size(${P}) must divide num_attention_heads(${NH})`);
  if (P <= NKV) {
    if (NKV % P !== 0) throw new Error(`train.ulysses_parallel_size(${P}) must divide num_key_value_heads(${NKV}) (or be a multiple of it)`);
    return { hq: NH / P, hkv: NKV / P, rep: 1 };
  }
  if (P % NKV !== 0) throw new Error(`train.ulysses_parallel_size(${P}) above num_key_value_heads(${NKV}) must be a multiple of it (KV heads are repeated)`);
  return { hq: NH / P, hkv: 1, rep: P / NKV };
}

export interface UlyssesOptions {
  /** train.ulysses_async: overlap the q/k/v projections (and their dgrads) with the all-to-alls. */
  async: boolean;
  /** Rows per rank at most (the model's capacity, ceil(micro_batch_size * max_seq_len / P)). */
  maxTokens: number;
}

export class UlyssesAttention implements AttentionCore {
  readonly P: number;
  private readonly hq: number;
  private readonly hkv: number;
  private readonly rep: number;
  private readonly HS: number;
  private readonly scale: number;
  private saved = new WeakMap<AttnSaved, HeadSaved>();
  // (P, Tl_max, h*HS) staging buffers, shared memory (the transport reads/writes them)
  private send: Record<Which, Float32Array>;
  private recvGrad: Record<Which, Float32Array>;
  private recvAtt: Float32Array;
  // device backend: host copies of the row-layout (T, H, HS) and head-layout (Tp, h*HS) tensors
  // the exchanges read and write (empty on cpu, where those tensors' own memory is used)
  private rowHost: Record<Which, Float32Array>;
  private headHost: Record<Which, Float32Array>;
  /** q, k, v of this forward (sync mode sends them from forward()). */
  private rows: Partial<Record<Which, F32>> = {};
  // head-layout gradients (Tp_max, h*HS)
  private dh: Record<Which | "att", F32>;
  private inflight: Partial<Record<Which, Promise<void>>> = {};
  private waitMs = 0;
  private sets = 0; // saved sets allocated (layers, or 1 under activation checkpointing)

  /** `order`: the rank's one PostOrder (staging.ts; plans sharing a group must share it). */
  constructor(private k: Kernels, private c: DecoderConfig, private group: CommGroup, private o: UlyssesOptions, private order = new PostOrder()) {
    this.P = group.size;
    ({ hq: this.hq, hkv: this.hkv, rep: this.rep } = ulyssesHeads(this.P, c.NH, c.NKV));
    this.HS = c.HS;
    this.scale = 1 / Math.sqrt(c.HS);
    const rows = this.P * o.maxTokens;
    const wq = this.hq * c.HS, wkv = this.hkv * c.HS;
    const shared = sharedF32;
    this.send = { q: shared(rows * wq), k: shared(rows * wkv), v: shared(rows * wkv) };
    this.recvGrad = { q: shared(rows * wq), k: shared(rows * wkv), v: shared(rows * wkv) };
    this.recvAtt = shared(rows * wq);
    const D = c.NH * c.HS, DKV = c.NKV * c.HS, st = (n: number) => stagingScratch(k, n);
    this.rowHost = { q: st(o.maxTokens * D), k: st(o.maxTokens * DKV), v: st(o.maxTokens * DKV) };
    this.headHost = { q: st(rows * wq), k: st(rows * wkv), v: st(rows * wkv) };
    this.dh = {
      q: k.alloc([rows * wq], "f32", { name: "ulysses.dq_heads" }), k: k.alloc([rows * wkv], "f32", { name: "ulysses.dk_heads" }),
      v: k.alloc([rows * wkv], "f32", { name: "ulysses.dv_heads" }), att: k.alloc([rows * wq], "f32", { name: "ulysses.datt_heads" }),
    };
  }

  /** Bytes of this core's buffers: staging + head-layout gradients + each saved set made so far. */
  activationBytes(): number {
    const rows = this.P * this.o.maxTokens, wq = this.hq * this.HS, wkv = this.hkv * this.HS;
    const staging = 2 * (wq + 2 * wkv) + wq + 2 * wq + 2 * wkv; // send + recvGrad, recvAtt, dh
    const hostCopies = [...Object.values(this.rowHost), ...Object.values(this.headHost)].reduce((n, a) => n + a.length, 0);
    return 4 * rows * (staging + this.sets * (2 * wq + 2 * wkv + this.hq)) + 4 * hostCopies;
  }

  /** Seconds this thread was blocked on Ulysses all-to-alls since the last call (benchmark). In
   *  async backward the gradients' wait is the model's, not counted here. */
  takeWaitSeconds(): number {
    const s = this.waitMs;
    this.waitMs = 0;
    return s / 1000;
  }

  // ---------------------------------------------------------------- forward
  ready(which: Which, x: F32, s: AttnSaved, b: BatchInputs): void {
    this.rows[which] = x;
    if (this.o.async) this.inflight[which] = this.toHeads(which, x, s, b.T); // collective: on the wire while the next projection computes
  }

  async forward(att: F32, s: AttnSaved, b: BatchInputs): Promise<void> {
    const T = b.T, Tp = this.P * T;
    const hs = this.headSaved(s);
    for (const w of ["q", "k", "v"] as const) {
      await this.wait(this.o.async ? this.inflight[w]! : this.toHeads(w, this.rows[w]!, s, T)); // collective: seq -> heads
      this.inflight[w] = undefined;
      this.rows[w] = undefined;
    }
    const at = (t: F32, n: number) => this.k.view(t, 0, [n]);
    const wq = this.hq * this.HS, wkv = this.hkv * this.HS;
    this.k.attentionForward(at(hs.att, Tp * wq), at(hs.lse, Tp * this.hq), at(hs.q, Tp * wq), at(hs.k, Tp * wkv), at(hs.v, Tp * wkv),
      b.cuSeqlens, Tp, this.hq, this.hkv, this.HS, this.scale, true);
    const n = Tp * wq;
    const a = pullOf(this.k, at(hs.att, n), this.headHost.q); // device: read back (cpu: its own memory)
    await this.wait(this.order.run(a.ready, () => this.group.allToAll(this.recvAtt.subarray(0, n), a.host, this.counts(T, this.hq), this.counts(T, this.hq)))); // collective: heads -> seq
    const out = landingOf(att, this.rowHost.q);
    this.unpack(out, this.recvAtt, T, this.c.NH, this.hq, "q");
    pushTo(this.k, att, out); // device: upload for o_proj
  }

  // ---------------------------------------------------------------- backward
  async backward(dq: F32, dk: F32, dv: F32, datt: F32, s: AttnSaved, b: BatchInputs): Promise<{ v: Promise<void>; q: Promise<void>; k: Promise<void> }> {
    const T = b.T, Tp = this.P * T;
    const hs = this.headSaved(s);
    const wq = this.hq * this.HS, wkv = this.hkv * this.HS;
    const at = (t: F32, n: number) => this.k.view(t, 0, [n]);
    const d = pullOf(this.k, datt, this.rowHost.q); // device: read back (cpu: its own memory)
    const datth = at(this.dh.att, Tp * wq), land = landingOf(datth, this.headHost.q);
    await this.wait(this.order.run(d.ready, () => {
      this.pack(this.send.q, d.host, T, this.c.NH, this.hq, "q");
      return this.group.allToAll(land, this.send.q.subarray(0, Tp * wq), this.counts(T, this.hq), this.counts(T, this.hq)); // collective: datt seq -> heads
    }));
    pushTo(this.k, datth, land); // device: upload for the attention backward
    const dqh = at(this.dh.q, Tp * wq), dkh = at(this.dh.k, Tp * wkv), dvh = at(this.dh.v, Tp * wkv);
    this.k.zero(dqh); this.k.zero(dkh); this.k.zero(dvh);
    this.k.attentionBackward(dqh, dkh, dvh, at(this.dh.att, Tp * wq), at(hs.q, Tp * wq), at(hs.k, Tp * wkv), at(hs.v, Tp * wkv),
      at(hs.att, Tp * wq), at(hs.lse, Tp * this.hq), b.cuSeqlens, Tp, this.hq, this.hkv, this.HS, this.scale, true);
    // dq, dk, dv were zeroed by the caller
    const back = (w: Which, dst: F32) => this.toRows(w, T).then(() => {
      const out = landingOf(dst, this.rowHost[w]);
      if (!dst.host) out.fill(0); // device: dst is zero, its host copy becomes the sum
      this.unpack(out, this.recvGrad[w], T, w === "q" ? this.c.NH : this.c.NKV, w === "q" ? this.hq : this.hkv, w);
      pushTo(this.k, dst, out); // device: upload for the projection's backward
    });
    if (this.o.async) return { v: back("v", dv), q: back("q", dq), k: back("k", dk) }; // all posted now, in the order consumed
    await this.wait(back("v", dv)); // collective: gradients heads -> seq, one after another
    await this.wait(back("q", dq));
    await this.wait(back("k", dk));
    const done = Promise.resolve();
    return { v: done, q: done, k: done };
  }

  // ---------------------------------------------------------------- exchanges and layouts
  /** Elements per member of one exchange: Tl rows of h heads. */
  private counts(T: number, h: number): number[] {
    return new Array(this.P).fill(T * h * this.HS);
  }

  /** q/k/v rows x (T, H, HS) -> pack to send (P, T, h*HS) -> this set's head-layout tensor (Tp, h*HS). */
  private toHeads(w: Which, x: F32, s: AttnSaved, T: number): Promise<void> {
    const h = w === "q" ? this.hq : this.hkv;
    const H = w === "q" ? this.c.NH : this.c.NKV;
    const n = this.P * T * h * this.HS;
    const src = pullOf(this.k, x, this.rowHost[w]); // device: read back (cpu: its own memory)
    const dst = this.k.view(this.headSaved(s)[w], 0, [n]), land = landingOf(dst, this.headHost[w]);
    return this.order.run(src.ready, () => {
      this.pack(this.send[w], src.host, T, H, h, w);
      return this.group.allToAll(land, this.send[w].subarray(0, n), this.counts(T, h), this.counts(T, h));
    }).then(() => pushTo(this.k, dst, land)); // device: upload for the attention kernel
  }

  /** A gradient's head layout (Tp, h*HS) -> recvGrad (P, T, h*HS): chunk j holds rank j's heads for our rows. */
  private toRows(w: Which, T: number): Promise<void> {
    const h = w === "q" ? this.hq : this.hkv;
    const n = this.P * T * h * this.HS;
    const g = pullOf(this.k, this.k.view(this.dh[w], 0, [n]), this.headHost[w]); // device: read back (cpu: its own memory)
    return this.order.run(g.ready, () => this.group.allToAll(this.recvGrad[w].subarray(0, n), g.host, this.counts(T, h), this.counts(T, h)));
  }

  /** First head (in the rank's (T, H, HS) rows) of the h heads chunk j carries. */
  private headOf(j: number, h: number, w: Which): number {
    return w !== "q" && this.rep > 1 ? Math.floor(j / this.rep) : j * h;
  }

  /** dst (P, T, h*HS) <- src (T, H, HS): chunk j = heads headOf(j).. of every row. */
  private pack(dst: Float32Array, src: Float32Array, T: number, H: number, h: number, w: Which): void {
    const HS = this.HS, wd = h * HS;
    for (let j = 0; j < this.P; j++) {
      const h0 = this.headOf(j, h, w);
      for (let t = 0; t < T; t++) dst.set(src.subarray((t * H + h0) * HS, (t * H + h0) * HS + wd), (j * T + t) * wd);
    }
  }

  /** dst (T, H, HS) <- src (P, T, h*HS), chunk j into heads headOf(j)... Repeated KV heads (their
   *  gradients) are summed into dst, zeroed by the caller, over j in order: a fixed order. */
  private unpack(dst: Float32Array, src: Float32Array, T: number, H: number, h: number, w: Which): void {
    const HS = this.HS, wd = h * HS;
    const sum = w !== "q" && this.rep > 1;
    for (let j = 0; j < this.P; j++) {
      const h0 = this.headOf(j, h, w);
      for (let t = 0; t < T; t++) {
        const d = (t * H + h0) * HS, o = (j * T + t) * wd;
        if (!sum) dst.set(src.subarray(o, o + wd), d);
        else for (let i = 0; i < wd; i++) dst[d + i] += src[o + i];
      }
    }
  }

  private headSaved(s: AttnSaved): HeadSaved {
    let hs = this.saved.get(s);
    if (!hs) {
      const rows = this.P * this.o.maxTokens, wq = this.hq * this.HS, wkv = this.hkv * this.HS;
      const a = (n: number, name: string) => this.k.alloc([n], "f32", { name: `ulysses.${name}` });
      hs = { q: a(rows * wq, "q"), k: a(rows * wkv, "k"), v: a(rows * wkv, "v"), att: a(rows * wq, "att"), lse: a(rows * this.hq, "lse") };
      this.saved.set(s, hs);
      this.sets++;
    }
    return hs;
  }

  /** Await a collective, adding the time this thread waited on it to the wait counter. */
  private async wait(p: Promise<void>): Promise<void> {
    const t0 = performance.now();
    await p;
    this.waitMs += performance.now() - t0;
  }
}
