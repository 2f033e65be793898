// Self-attention block (HF LlamaAttention / Qwen2Attention / Qwen3Attention), explicit autograd:
//   q = xn Wq^T (+bq) -> (qwen3: per-head RMSNorm) -> RoPE ; same for k ; v = xn Wv^T (+bv)
//   att = varlen causal softmax(q k^T / sqrt(HS)) v   (GQA: query head h reads kv head h / (NH/NKV))
//   out = att Wo^T (+bo)
// Shapes: xn (T,C), q/att (T,NH,HS) = (T,D), k/v (T,NKV,HS) = (T,DKV), lse (T,NH).
// The core (softmax(q k^T) v over the packed row) is an AttentionCore: by default the kernel on
// this rank's rows; the model's plan declares it the Ulysses site (models/plan.ts), where a
// sequence-parallel plan installs its own core (all-to-all seq <-> heads around the kernel).
import type { Kernels } from "../../kernels/index.ts";
import type { DecoderConfig } from "../config.ts";
import type { Arena, BatchInputs, Buf, F32 } from "./arena.ts";
import { RMSNorm } from "./norm.ts";
import type { Rope } from "./rope.ts";

/** One layer's cached keys (after RoPE) and values, (capacity, NKV, HS) each, on the host. */
export class LayerKv {
  readonly k: Float32Array;
  readonly v: Float32Array;
  length = 0;
  constructor(readonly capacity: number, private rowWidth: number) {
    this.k = new Float32Array(capacity * rowWidth);
    this.v = new Float32Array(capacity * rowWidth);
  }
  /** Append T rows; returns the number of rows cached before them. */
  append(k: Float32Array, v: Float32Array, T: number): number {
    const past = this.length;
    if (past + T > this.capacity) throw new Error(`KV cache: ${past} + ${T} tokens exceed its capacity of ${this.capacity}`);
    this.k.set(k, past * this.rowWidth);
    this.v.set(v, past * this.rowWidth);
    this.length += T;
    return past;
  }
}

/** Host decode attention: q (T,NH,HS) of the tokens at positions past..past+T-1 against the
 *  cached keys/values (already holding them), causal; returns out (T,NH,HS). */
export function decodeAttention(qh: Float32Array, cache: LayerKv, past: number, T: number, NH: number, NKV: number, HS: number,
  scale: number): Float32Array {
  const o = new Float32Array(T * NH * HS);
  const scores = new Float64Array(past + T);
  const rep = NH / NKV;
  for (let t = 0; t < T; t++) {
    const n = past + t + 1; // keys 0..past+t
    for (let h = 0; h < NH; h++) {
      const kvh = Math.floor(h / rep);
      const qo = (t * NH + h) * HS;
      let mx = -Infinity;
      for (let j = 0; j < n; j++) {
        const ko = (j * NKV + kvh) * HS;
        let dot = 0;
        for (let d = 0; d < HS; d++) dot += qh[qo + d] * cache.k[ko + d];
        scores[j] = dot * scale;
        if (scores[j] > mx) mx = scores[j];
      }
      let sum = 0;
      for (let j = 0; j < n; j++) sum += scores[j] = Math.exp(scores[j] - mx);
      for (let j = 0; j < n; j++) {
        const p = scores[j] / sum;
        const vo = (j * NKV + kvh) * HS;
        for (let d = 0; d < HS; d++) o[qo + d] += p * cache.v[vo + d];
      }
    }
  }
  return o;
}

/** The layer's parameter (or gradient) views by short name, e.g. "self_attn.q_proj.weight". */
export type Views = Map<string, F32>;

/** What forward saves for backward. RoPE runs in place, so q/k hold the rotated values;
 *  qRaw/kRaw (pre-norm projections) exist only with qk-norm, whose backward needs them. */
export interface AttnSaved {
  q: Buf; k: Buf; v: Buf; att: Buf; lse: Buf;
  qRaw: Buf | null; kRaw: Buf | null; rstdQ: Buf | null; rstdK: Buf | null;
}

/** Backward-only scratch, shared by all layers. */
export interface AttnScratch {
  datt: Buf; dq: Buf; dk: Buf; dv: Buf; dqPre: Buf; dkPre: Buf;
}

/** The core attention of a packed row, as the block calls it. q, k, v are this rank's rows
 *  (T,NH*HS), (T,NKV*HS) after RoPE; `s` identifies the saved-activation set (one per layer, or
 *  one shared under activation checkpointing), so a core can keep its own per-set state. */
export interface AttentionCore {
  /** q, k or v is final (called in the order q, k, v): a core may start moving it at once. */
  ready(which: "q" | "k" | "v", x: F32, s: AttnSaved, b: BatchInputs): void;
  /** att (T,D) (and whatever backward needs) <- the q, k, v handed over by ready(). */
  forward(att: F32, s: AttnSaved, b: BatchInputs): Promise<void>;
  /** dq, dk, dv (T,·) (zeroed by the caller) += gradients from datt (T,D). Each inner promise
   *  resolves when that gradient is in place; they are consumed in the order v, q, k. */
  backward(dq: F32, dk: F32, dv: F32, datt: F32, s: AttnSaved, b: BatchInputs): Promise<{ v: Promise<void>; q: Promise<void>; k: Promise<void> }>;
}

/** The kernel on this rank's rows: the core of a single process (and of data parallelism). */
export class LocalAttention implements AttentionCore {
  private done = Promise.resolve();
  constructor(private k: Kernels, private c: DecoderConfig) {}
  ready(): void {}
  async forward(att: F32, s: AttnSaved, b: BatchInputs): Promise<void> {
    const { c } = this, T = b.T;
    this.k.attentionForward(att, s.lse.at(T), s.q.at(T), s.k.at(T), s.v.at(T), b.cuSeqlens, T, c.NH, c.NKV, c.HS, 1 / Math.sqrt(c.HS), true);
  }
  async backward(dq: F32, dk: F32, dv: F32, datt: F32, s: AttnSaved, b: BatchInputs): Promise<{ v: Promise<void>; q: Promise<void>; k: Promise<void> }> {
    const { c } = this, T = b.T;
    this.k.attentionBackward(dq, dk, dv, datt, s.q.at(T), s.k.at(T), s.v.at(T), s.att.at(T), s.lse.at(T), b.cuSeqlens,
      T, c.NH, c.NKV, c.HS, 1 / Math.sqrt(c.HS), true);
    return { v: this.done, q: this.done, k: this.done };
  }
}

export class Attention {
  /** Replaced by a sequence-parallel plan (DecoderLM.setAttentionCore). */
  core: AttentionCore;
  readonly D: number;
  readonly DKV: number;
  private scale: number;
  private headNorm: RMSNorm | null;

  constructor(private k: Kernels, private c: DecoderConfig, private rope: Rope) {
    this.D = c.NH * c.HS;
    this.DKV = c.NKV * c.HS;
    this.scale = 1 / Math.sqrt(c.HS);
    this.headNorm = c.qkNorm ? new RMSNorm(k, c.HS, c.eps) : null;
    this.core = new LocalAttention(k, c);
  }

  allocSaved(a: Arena, name: string): AttnSaved {
    const { NH, NKV } = this.c;
    const qk = this.c.qkNorm;
    return {
      q: a.buf(this.D, `${name}.q`), k: a.buf(this.DKV, `${name}.k`), v: a.buf(this.DKV, `${name}.v`),
      att: a.buf(this.D, `${name}.att`), lse: a.buf(NH, `${name}.lse`),
      qRaw: qk ? a.buf(this.D, `${name}.q_raw`) : null, kRaw: qk ? a.buf(this.DKV, `${name}.k_raw`) : null,
      rstdQ: qk ? a.buf(NH, `${name}.rstd_q`) : null, rstdK: qk ? a.buf(NKV, `${name}.rstd_k`) : null,
    };
  }

  allocScratch(a: Arena): AttnScratch {
    return {
      datt: a.buf(this.D, "attn.datt"), dq: a.buf(this.D, "attn.dq"), dk: a.buf(this.DKV, "attn.dk"),
      dv: a.buf(this.DKV, "attn.dv"), dqPre: a.buf(this.D, "attn.dq_pre"), dkPre: a.buf(this.DKV, "attn.dk_pre"),
    };
  }

  // out (T,C) <- xn (T,C); fills s. Awaits only inside the core (a sequence-parallel all-to-all).
  async forward(out: F32, xn: F32, w: Views, s: AttnSaved, b: BatchInputs): Promise<void> {
    const { k, c, D, DKV, core } = this;
    const T = b.T;
    const q = s.q.at(T), kk = s.k.at(T), v = s.v.at(T), att = s.att.at(T);
    this.project(q, s.qRaw, s.rstdQ, xn, w, "q", c.NH, D, b);
    core.ready("q", q, s, b);
    this.project(kk, s.kRaw, s.rstdK, xn, w, "k", c.NKV, DKV, b);
    core.ready("k", kk, s, b);
    k.linearForward(v, xn, w.get("self_attn.v_proj.weight")!, w.get("self_attn.v_proj.bias") ?? null, T, c.C, DKV);
    core.ready("v", v, s, b);
    await core.forward(att, s, b);
    k.linearForward(out, att, w.get("self_attn.o_proj.weight")!, w.get("self_attn.o_proj.bias") ?? null, T, D, c.C);
  }

  /** Inference with a KV cache: the T new tokens (positions past..past+T-1) attend to the cached
   *  keys/values and to themselves (causal). SYNC POINT: q/k/v are read to the host, the small
   *  decode attention runs there, the result is uploaded for o_proj. out (T,C) <- xn (T,C). */
  async forwardCached(out: F32, xn: F32, w: Views, s: AttnSaved, b: BatchInputs, cache: LayerKv): Promise<void> {
    const { k, c, D, DKV } = this;
    const { T } = b;
    const { NH, NKV, HS } = c;
    const q = s.q.at(T), kk = s.k.at(T), v = s.v.at(T), att = s.att.at(T);
    this.project(q, s.qRaw, s.rstdQ, xn, w, "q", NH, D, b);
    this.project(kk, s.kRaw, s.rstdK, xn, w, "k", NKV, DKV, b);
    k.linearForward(v, xn, w.get("self_attn.v_proj.weight")!, w.get("self_attn.v_proj.bias") ?? null, T, c.C, DKV);
    const qh = await k.read(q);
    const past = cache.append(await k.read(kk), await k.read(v), T);
    k.upload(att, decodeAttention(qh, cache, past, T, NH, NKV, HS, this.scale));
    k.linearForward(out, att, w.get("self_attn.o_proj.weight")!, w.get("self_attn.o_proj.bias") ?? null, T, D, c.C);
  }

  /** q or k: projection (+bias), optional per-head norm, RoPE in place. */
  private project(dst: F32, raw: Buf | null, rstd: Buf | null, xn: F32, w: Views, which: "q" | "k", H: number, W: number, b: BatchInputs): void {
    const T = b.T;
    const weight = w.get(`self_attn.${which}_proj.weight`)!;
    const bias = w.get(`self_attn.${which}_proj.bias`) ?? null;
    if (this.headNorm) {
      const r = raw!.at(T);
      this.k.linearForward(r, xn, weight, bias, T, this.c.C, W);
      this.headNorm.forward(dst, rstd!.at(T), r, w.get(`self_attn.${which}_norm.weight`)!, T * H);
    } else {
      this.k.linearForward(dst, xn, weight, bias, T, this.c.C, W);
    }
    this.rope.forward(dst, dst, b.positions, T, H);
  }

  // dxn (T,C) += ; g (weight grads) += ; from dout (T,C). Each projection's backward starts as
  // soon as the core hands its gradient back (async Ulysses: while the others are in flight).
  async backward(dxn: F32, g: Views, dout: F32, xn: F32, w: Views, s: AttnSaved, sc: AttnScratch, b: BatchInputs): Promise<void> {
    const { k, c, D, DKV } = this;
    const T = b.T;
    const datt = sc.datt.at(T), dq = sc.dq.at(T), dk = sc.dk.at(T), dv = sc.dv.at(T);
    k.zero(datt);
    k.linearBackward(datt, g.get("self_attn.o_proj.weight")!, g.get("self_attn.o_proj.bias") ?? null, dout, s.att.at(T),
      w.get("self_attn.o_proj.weight")!, T, D, c.C);
    k.zero(dq); k.zero(dk); k.zero(dv);
    const arrived = await this.core.backward(dq, dk, dv, datt, s, b);
    await arrived.v;
    k.linearBackward(dxn, g.get("self_attn.v_proj.weight")!, g.get("self_attn.v_proj.bias") ?? null, dv, xn,
      w.get("self_attn.v_proj.weight")!, T, c.C, DKV);
    await arrived.q;
    this.unproject(dxn, g, dq, sc.dqPre.at(T), s.qRaw, s.rstdQ, xn, w, "q", c.NH, D, b);
    await arrived.k;
    this.unproject(dxn, g, dk, sc.dkPre.at(T), s.kRaw, s.rstdK, xn, w, "k", c.NKV, DKV, b);
  }

  /** Backward of project(): d(rotated) -> RoPE^T -> (norm backward) -> projection backward. */
  private unproject(dxn: F32, g: Views, dRot: F32, dPre: F32, raw: Buf | null, rstd: Buf | null, xn: F32, w: Views,
    which: "q" | "k", H: number, W: number, b: BatchInputs): void {
    const { k, c } = this;
    const T = b.T;
    k.zero(dPre);
    this.rope.backward(dPre, dRot, b.positions, T, H);
    let dProj = dPre;
    if (this.headNorm) {
      k.zero(dRot); // reuse: dRot is consumed, now receives d(raw projection)
      const nw = `self_attn.${which}_norm.weight`;
      this.headNorm.backward(dRot, g.get(nw)!, dPre, raw!.at(T), w.get(nw)!, rstd!.at(T), T * H);
      dProj = dRot;
    }
    k.linearBackward(dxn, g.get(`self_attn.${which}_proj.weight`)!, g.get(`self_attn.${which}_proj.bias`) ?? null, dProj, xn,
      w.get(`self_attn.${which}_proj.weight`)!, T, c.C, W);
  }
}
