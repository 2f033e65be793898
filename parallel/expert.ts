// Expert parallelism (train.expert_parallel_size, VeOmni v0.1; torchtitan's ExpertParallel): the
// routed experts of every sparse layer are split over the `ep` axis of the expert mesh
// [ep_fsdp, ep] (mesh/dims.ts expertMesh, ep innermost): ep rank j holds experts
// [j*El, (j+1)*El), El = E / ep, and each of those slices is FSDP-sharded over `ep_fsdp` (the
// ranks holding the same experts); every other parameter stays FSDP over the whole shard group.
// Per MoE layer, on rows already sorted by global expert (models/blocks/router.ts), so the rows
// for ep rank j are one contiguous run [off[j*El], off[(j+1)*El]):
//   1. counts   all-to-all of per-expert row counts: cnt[i][e] = rows source i sends local expert e
//   2. dispatch variable all-to-all of the rows (R,C): what arrives is [source i][local expert e]
//   3. permute  to [local expert e][source i] (expert-major, as the grouped GEMM wants)
//   4. grouped SwiGLU GEMM over the El local experts (kernels/grouped_gemm.ts)
//   5. combine  un-permute, all-to-all back: each row returns to its source, in the order it left
// Backward mirrors 2-5 on dys (the counts of the forward are kept per saved set): dispatch dys,
// grouped GEMM backward (this rank's expert gradients hold every source's rows), return dxs.
// A rank whose rows route to no local expert (or that sends none) still posts every all-to-all,
// with zero-length segments, so no peer waits on it. Expert gradients are summed over ep_fsdp by
// FSDP's reduce-scatter; with the loss already divided by the step's global valid tokens, that
// sum is the exact gradient (no extra divide, as torchtitan's ep_fsdp gradient divide factor).
// On a device backend (WebGPU) the rows are staged through host memory (staging.ts): xs / dys are
// read back into the dispatch buffer, the permuted rows uploaded for the grouped GEMM, its output
// read back for the combine, and what returns uploaded (+= on the device for dxs). The counts,
// permutations and wire layouts are the cpu path's. Every collective is posted through the rank's
// one PostOrder (the ep group can be FSDP's shard group too).
// Shape letters: E experts, El = E/ep local experts, R rows this rank routed (T*K), Rr rows it
// received, C hidden size, IM expert width.
import type { Kernels, Tensor } from "../kernels/index.ts";
import { groupedSwigluBackward, groupedSwigluForward } from "../kernels/index.ts";
import { sharedF32, type CommGroup } from "../mesh/index.ts";
import type { DecoderConfig, ExpertCore, MoeSaved, MoeScratch } from "../models/index.ts";
import { landingOf, PostOrder, pullOf, pushTo } from "./staging.ts";

type F32 = Tensor<"f32">;

/** The expert-parallel sizes of a run, or a one-line refusal naming the fields and numbers. */
export function expertParallelSizes(ep: number, fsdpSize: number, numExperts: number | null, where: string): { ep: number; epFsdp: number } {
  if (!Number.isInteger(ep) || ep < 1) throw new Error(`train.expert_parallel_size = ${ep}: expected a positive integer`);
  if (fsdpSize % ep !== 0) throw new Error(`train.expert_parallel_size(${ep}) must divide the FSDP size dp_shard * ulysses (${fsdpSize}) of ${where}`);
  if (numExperts !== null && numExperts % ep !== 0) throw new Error(`train.expert_parallel_size(${ep}) must divide num_experts (${numExperts}) of the model (each ep rank holds num_experts / ep experts)`);
  return { ep, epFsdp: fsdpSize / ep };
}

/** What one layer's forward exchanged: its backward sends the same rows back the same way. */
interface Exchange {
  /** rows this rank sends to / receives from each member (P). */
  sendRows: number[];
  recvRows: number[];
  /** local expert row offsets (El+1) of the permuted, expert-major rows. */
  offL: Int32Array;
  /** per (source i, local expert e), i-major: start in the received [source][expert] layout, start in the expert-major layout, rows. */
  chunks: Int32Array;
  /** received inputs, expert-major (Rr,C), and the grouped GEMM's saved gate/up (2IM*Rr). */
  xl: F32 | null;
  gu: F32 | null;
}

export class ExpertParallel implements ExpertCore {
  readonly P: number;
  readonly El: number;
  /** First expert this rank holds. */
  readonly first: number;
  private readonly E: number;
  private readonly C: number;
  private readonly IM: number;
  private ex = new WeakMap<MoeSaved, Exchange>();
  // shared staging (the transport reads/writes them), grown on demand
  private cntSend: Int32Array;
  private cntRecv: Int32Array;
  // a: this rank's rows (R,C), b: received rows (Rr,C); d (device backend only): host copy of the
  // expert-major rows uploaded to / read back from the grouped GEMM
  private stage: Record<"a" | "b" | "d", Float32Array> = { a: sharedF32(1), b: sharedF32(1), d: sharedF32(1) };
  // grouped-GEMM scratch over the received rows, grown on demand; ret: returned dxs rows (device)
  private tmp: Record<"y" | "h" | "dh" | "dgu" | "dy" | "dx" | "ret", F32 | null> = { y: null, h: null, dh: null, dgu: null, dy: null, dx: null, ret: null };
  private waitMs = 0;

  /** `order`: the rank's one PostOrder (staging.ts; plans sharing a group must share it). */
  constructor(private k: Kernels, c: DecoderConfig, private group: CommGroup, private order = new PostOrder()) {
    const m = c.moe;
    if (!m) throw new Error(`train.expert_parallel_size(${group.size}) with model ${c.modelType}: it has no routed experts`);
    this.P = group.size;
    this.E = m.E;
    this.El = m.E / this.P;
    if (!Number.isInteger(this.El)) throw new Error(`train.expert_parallel_size(${this.P}) must divide num_experts (${m.E})`);
    this.first = group.rank * this.El;
    this.C = c.C;
    this.IM = m.IM;
    const n = this.P * this.El;
    this.cntSend = new Int32Array(new SharedArrayBuffer(4 * n));
    this.cntRecv = new Int32Array(new SharedArrayBuffer(4 * n));
  }

  /** Seconds this thread waited on the expert all-to-alls since the last call (benchmark). */
  takeWaitSeconds(): number {
    const s = this.waitMs;
    this.waitMs = 0;
    return s / 1000;
  }

  // ---------------------------------------------------------------- forward
  async forward(ys: F32, xs: F32, off: Int32Array, wgu: F32, wd: F32, s: MoeSaved): Promise<void> {
    const { El, C, IM } = this;
    const x = await this.exchangeCounts(off, s);
    const Rr = x.offL[El];
    const recv = await this.dispatch(xs, off[this.E], x); // [source][expert] rows
    x.xl = this.grow(x.xl, Rr * C, "ep.xl");
    x.gu = this.grow(x.gu, Rr * 2 * IM, "ep.gu");
    this.toExperts(this.at(x.xl, Rr * C), recv, x);
    const y = this.scratch("y", Rr * C);
    if (Rr > 0) groupedSwigluForward(this.k, this.at(y, Rr * C), this.at(x.gu!, Rr * 2 * IM), this.at(x.xl!, Rr * C), wgu, wd, x.offL, El, C, IM, this.at(this.scratch("h", Rr * IM), Rr * IM));
    await this.combine(ys, this.at(y, Rr * C), x, false);
  }

  // ---------------------------------------------------------------- backward
  async backward(dxs: F32, dwgu: F32, dwd: F32, dys: F32, _xs: F32, off: Int32Array, wgu: F32, wd: F32, s: MoeSaved): Promise<void> {
    const { El, C, IM } = this;
    const x = this.ex.get(s);
    if (!x) throw new Error("expert parallel: backward without the layer's forward exchange");
    const Rr = x.offL[El];
    const recv = await this.dispatch(dys, off[this.E], x);
    const dy = this.scratch("dy", Rr * C), dx = this.scratch("dx", Rr * C);
    this.toExperts(this.at(dy, Rr * C), recv, x);
    this.k.zero(this.at(dx, Rr * C));
    if (Rr > 0) {
      groupedSwigluBackward(this.k, this.at(dx, Rr * C), dwgu, dwd, this.at(dy, Rr * C), this.at(x.xl!, Rr * C), this.at(x.gu!, Rr * 2 * IM), wgu, wd, x.offL, El, C, IM, {
        h: this.at(this.scratch("h", Rr * IM), Rr * IM), dh: this.at(this.scratch("dh", Rr * IM), Rr * IM), dgu: this.at(this.scratch("dgu", Rr * 2 * IM), Rr * 2 * IM),
      });
    }
    await this.combine(dxs, this.at(dx, Rr * C), x, true);
  }

  // ---------------------------------------------------------------- exchanges
  /** Step 1: every member's per-expert row counts for this rank's experts; the layer's Exchange. */
  private async exchangeCounts(off: Int32Array, s: MoeSaved): Promise<Exchange> {
    const { P, El } = this;
    for (let j = 0; j < P; j++) for (let e = 0; e < El; e++) this.cntSend[j * El + e] = off[j * El + e + 1] - off[j * El + e];
    const each = Array(P).fill(El);
    await this.wait(this.order.run(null, () => this.group.allToAll(this.cntRecv, this.cntSend, each, each))); // collective: per-expert counts
    const cnt = this.cntRecv;
    const sendRows = Array.from({ length: P }, (_, j) => off[(j + 1) * El] - off[j * El]);
    const recvRows = Array.from({ length: P }, (_, i) => cnt.subarray(i * El, (i + 1) * El).reduce((a, b) => a + b, 0));
    const offL = new Int32Array(El + 1);
    for (let e = 0; e < El; e++) {
      let n = 0;
      for (let i = 0; i < P; i++) n += cnt[i * El + e];
      offL[e + 1] = offL[e] + n;
    }
    const chunks = new Int32Array(3 * P * El);
    const at = offL.slice(0, El); // next free row of each local expert, expert-major
    let src = 0;
    for (let i = 0; i < P; i++) {
      for (let e = 0; e < El; e++) {
        const n = cnt[i * El + e], c = 3 * (i * El + e);
        chunks[c] = src;
        chunks[c + 1] = at[e];
        chunks[c + 2] = n;
        src += n;
        at[e] += n;
      }
    }
    let x = this.ex.get(s);
    if (!x) this.ex.set(s, (x = { sendRows, recvRows, offL, chunks, xl: null, gu: null }));
    else Object.assign(x, { sendRows, recvRows, offL, chunks });
    return x;
  }

  /** Step 2: rows (R,C) sorted by expert -> each ep member's run; returns the received rows
   *  [source][local expert] (Rr,C), a view of staging buffer b. */
  private async dispatch(rows: F32, R: number, x: Exchange): Promise<Float32Array> {
    const { C } = this;
    const Rr = x.offL[this.El];
    const a = this.staging("a", R * C), b = this.staging("b", Rr * C);
    const src = pullOf(this.k, this.at(rows, R * C), a); // device: read back into a (cpu: its own memory)
    await this.wait(this.order.run(src.ready, () => {
      if (src.host !== a) a.set(src.host);
      return this.group.allToAll(b, a, x.sendRows.map((r) => r * C), x.recvRows.map((r) => r * C)); // collective: dispatch
    }));
    return b;
  }

  /** Step 3: received rows [source][expert] -> dst (Rr,C) expert-major (device: uploaded). */
  private toExperts(dst: F32, recv: Float32Array, x: Exchange): void {
    const land = landingOf(dst, (n) => this.staging("d", n));
    this.permute(land, recv, x, this.C, true);
    pushTo(this.k, dst, land);
  }

  /** Step 5: expert-major rows (Rr,C) -> back to their sources -> out (R,C) (= or += with `add`). */
  private async combine(out: F32, rows: F32, x: Exchange, add: boolean): Promise<void> {
    const { C } = this;
    const Rr = x.offL[this.El], R = x.sendRows.reduce((p, q) => p + q, 0);
    const b = this.staging("b", Rr * C), a = this.staging("a", R * C);
    const src = pullOf(this.k, rows, (n) => this.staging("d", n)); // device: read back (cpu: its own memory)
    await this.wait(this.order.run(src.ready, () => {
      this.permute(src.host, b, x, C, false);
      return this.group.allToAll(a, b, x.recvRows.map((r) => r * C), x.sendRows.map((r) => r * C)); // collective: combine
    }));
    const o = this.at(out, R * C);
    if (o.host) {
      if (add) for (let i = 0; i < R * C; i++) o.host[i] += a[i];
      else o.host.set(a);
    } else if (add) {
      const ret = this.at(this.scratch("ret", R * C), R * C);
      this.k.upload(ret, a);
      this.k.axpy(o, 1, ret); // device: out += returned rows
    } else {
      this.k.upload(o, a);
    }
  }

  /** [source][expert] <-> [expert][source] row chunks (`toExperts`: from `recv` into `em`; else back). */
  private permute(em: Float32Array, recv: Float32Array, x: Exchange, C: number, toExperts: boolean): void {
    const ch = x.chunks;
    for (let c = 0; c < ch.length; c += 3) {
      const n = ch[c + 2] * C;
      if (n === 0) continue;
      const s = ch[c] * C, d = ch[c + 1] * C;
      if (toExperts) em.set(recv.subarray(s, s + n), d);
      else recv.set(em.subarray(d, d + n), s);
    }
  }

  // ---------------------------------------------------------------- buffers
  private async wait(p: Promise<void>): Promise<void> {
    const t0 = performance.now();
    await p;
    this.waitMs += performance.now() - t0;
  }

  /** A shared staging buffer of exactly n elements (a view; grown on demand). */
  private staging(which: "a" | "b" | "d", n: number): Float32Array {
    if (this.stage[which].length < n) this.stage[which] = sharedF32(Math.ceil(n * 1.25));
    return this.stage[which].subarray(0, n);
  }

  private grow(t: F32 | null, n: number, name: string): F32 {
    if (t && t.numel >= Math.max(1, n)) return t;
    if (t) this.k.free(t);
    return this.k.alloc([Math.max(1, Math.ceil(n * 1.25))], "f32", { shared: false, name });
  }

  private scratch(which: keyof ExpertParallel["tmp"], n: number): F32 {
    return (this.tmp[which] = this.grow(this.tmp[which], n, `ep.${which}`));
  }

  private at(t: F32, n: number): F32 {
    if (n > t.numel) throw new Error(`expert parallel: a view of ${n} values of a tensor of ${t.numel}`);
    return n === t.numel ? t : this.k.view(t, 0, [n]);
  }
}

