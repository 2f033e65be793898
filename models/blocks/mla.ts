// Multi-head latent attention (HF DeepseekV3Attention), explicit autograd. For xn (T,C):
//   q  (T,NH,DQK) = q_b(RMSNorm(q_a(xn)))   (or q_proj(xn) without q_lora_rank)  per head [nope | rope]
//   kva (T,KR+DR) = kv_a_proj_with_mqa(xn) = [latent (KR) | k_rope (DR), one head shared by all]
//   kvb (T,NH,DN+DV) = kv_b(RMSNorm(latent))   per head [k_nope | v]
//   RoPE on q's and k's rope dims; rope_interleave: HF first permutes them to (even | odd) pairs,
//     x.view(d/2, 2).transpose, then rotates halves, and keeps that order: so do we (copyCols).
//   k (T,NH,DQK) = [k_nope | k_rope broadcast], v padded with zeros to DQK (HF's flash path), then
//   varlen causal attention with scale (DN+DR)^-0.5 (x yarn mscale^2), the first DV of each head's
//   output -> o_proj.
// Shape letters: DQK = DN + DR, the latent ranks QR / KR; the q/kv RMSNorms use eps 1e-6 (HF
// builds them without rms_norm_eps). NKV = NH: every head has its own k_nope and v.
import type { Kernels } from "../../kernels/index.ts";
import type { DecoderConfig, MlaConfig } from "../config.ts";
import type { Arena, BatchInputs, Buf, F32 } from "./arena.ts";
import { decodeAttention, type LayerKv, type Views } from "./attention.ts";
import { RMSNorm } from "./norm.ts";
import type { Rope } from "./rope.ts";

export interface MlaSaved {
  qa: Buf | null; qan: Buf | null; rstdQ: Buf | null;
  kvp: Buf; kvn: Buf; rstdKV: Buf;
  q: Buf; k: Buf; v: Buf; att: Buf; lse: Buf; ao: Buf;
}

export interface MlaScratch {
  kva: Buf; kvb: Buf; r: Buf; rPre: Buf; dao: Buf; datt: Buf; dq: Buf; dk: Buf; dv: Buf;
  dqan: Buf | null; dqa: Buf | null; dkvn: Buf; dkvp: Buf; dkva: Buf;
}

export class Mla {
  private m: MlaConfig;
  private DQK: number;
  private qNorm: RMSNorm | null;
  private kvNorm: RMSNorm;

  constructor(private k: Kernels, private c: DecoderConfig, private rope: Rope) {
    this.m = c.mla!;
    this.DQK = this.m.DN + this.m.DR;
    this.qNorm = this.m.QR > 0 ? new RMSNorm(k, this.m.QR, 1e-6) : null;
    this.kvNorm = new RMSNorm(k, this.m.KR, 1e-6);
  }

  /** Cached keys/values per token: (NH, DQK) each (v zero-padded). */
  get kvWidth(): number {
    return this.c.NH * this.DQK;
  }

  allocSaved(a: Arena, name: string): MlaSaved {
    const { NH } = this.c, { QR, KR, DV } = this.m, D = NH * this.DQK;
    return {
      qa: QR ? a.buf(QR, `${name}.q_a`) : null, qan: QR ? a.buf(QR, `${name}.q_a_normed`) : null, rstdQ: QR ? a.buf(1, `${name}.rstd_q_a`) : null,
      kvp: a.buf(KR, `${name}.kv_latent`), kvn: a.buf(KR, `${name}.kv_latent_normed`), rstdKV: a.buf(1, `${name}.rstd_kv`),
      q: a.buf(D, `${name}.q`), k: a.buf(D, `${name}.k`), v: a.buf(D, `${name}.v_padded`), att: a.buf(D, `${name}.att`),
      lse: a.buf(NH, `${name}.lse`), ao: a.buf(NH * DV, `${name}.att_v`),
    };
  }

  allocScratch(a: Arena): MlaScratch {
    const { NH } = this.c, { QR, KR, DR, DN, DV } = this.m, D = NH * this.DQK;
    return {
      kva: a.buf(KR + DR, "mla.kv_a"), kvb: a.buf(NH * (DN + DV), "mla.kv_b"), r: a.buf(NH * DR, "mla.rope"), rPre: a.buf(NH * DR, "mla.rope_pre"),
      dao: a.buf(NH * DV, "mla.datt_v"), datt: a.buf(D, "mla.datt"), dq: a.buf(D, "mla.dq"), dk: a.buf(D, "mla.dk"), dv: a.buf(D, "mla.dv"),
      dqan: QR ? a.buf(QR, "mla.dq_a_normed") : null, dqa: QR ? a.buf(QR, "mla.dq_a") : null,
      dkvn: a.buf(KR, "mla.dkv_latent_normed"), dkvp: a.buf(KR, "mla.dkv_latent"), dkva: a.buf(KR + DR, "mla.dkv_a"),
    };
  }

  /** dst (N,DR) <- the DR rope columns of src (N,srcW) at srcOff, (even | odd) when interleaved. */
  private takeRope(dst: F32, src: F32, N: number, srcW: number, srcOff: number): void {
    const { DR, interleave } = this.m;
    if (!interleave) return this.k.copyCols(dst, src, N, DR, DR, 0, 1, srcW, srcOff, 1, false);
    this.k.copyCols(dst, src, N, DR / 2, DR, 0, 1, srcW, srcOff, 2, false);
    this.k.copyCols(dst, src, N, DR / 2, DR, DR / 2, 1, srcW, srcOff + 1, 2, false);
  }

  /** Inverse of takeRope: dst (N,dstW) rope columns at dstOff <- src (N,DR). */
  private putRope(dst: F32, src: F32, N: number, dstW: number, dstOff: number): void {
    const { DR, interleave } = this.m;
    if (!interleave) return this.k.copyCols(dst, src, N, DR, dstW, dstOff, 1, DR, 0, 1, false);
    this.k.copyCols(dst, src, N, DR / 2, dstW, dstOff, 2, DR, 0, 1, false);
    this.k.copyCols(dst, src, N, DR / 2, dstW, dstOff + 1, 2, DR, DR / 2, 1, false);
  }

  /** q, k, v (T,NH,DQK) with RoPE applied, from xn (T,C); fills s (and sc.kva/kvb/r as scratch). */
  private qkv(xn: F32, w: Views, s: MlaSaved, sc: MlaScratch, b: BatchInputs): void {
    const { k, c, m, DQK } = this;
    const { T } = b, { NH, C } = c, { QR, KR, DR, DN, DV } = m;
    const q = s.q.at(T), kf = s.k.at(T), vf = s.v.at(T);
    if (QR) {
      const qa = s.qa!.at(T), qan = s.qan!.at(T);
      k.linearForward(qa, xn, w.get("self_attn.q_a_proj.weight")!, w.get("self_attn.q_a_proj.bias") ?? null, T, C, QR);
      this.qNorm!.forward(qan, s.rstdQ!.at(T), qa, w.get("self_attn.q_a_layernorm.weight")!, T);
      k.linearForward(q, qan, w.get("self_attn.q_b_proj.weight")!, null, T, QR, NH * DQK);
    } else {
      k.linearForward(q, xn, w.get("self_attn.q_proj.weight")!, null, T, C, NH * DQK);
    }
    const kva = sc.kva.at(T), kvb = sc.kvb.at(T), kvp = s.kvp.at(T), kvn = s.kvn.at(T);
    k.linearForward(kva, xn, w.get("self_attn.kv_a_proj_with_mqa.weight")!, w.get("self_attn.kv_a_proj_with_mqa.bias") ?? null, T, C, KR + DR);
    k.copyCols(kvp, kva, T, KR, KR, 0, 1, KR + DR, 0, 1, false);
    this.kvNorm.forward(kvn, s.rstdKV.at(T), kvp, w.get("self_attn.kv_a_layernorm.weight")!, T);
    k.linearForward(kvb, kvn, w.get("self_attn.kv_b_proj.weight")!, null, T, KR, NH * (DN + DV));
    // q: rope dims rotated in place (in HF's permuted order)
    const qr = k.view(sc.r.at(T), 0, [T * NH * DR]);
    this.takeRope(qr, q, T * NH, DQK, DN);
    this.rope.forward(qr, qr, b.positions, T, NH);
    k.copyCols(q, qr, T * NH, DR, DQK, DN, 1, DR, 0, 1, false);
    // k: [k_nope | shared k_rope] per head; v zero-padded to DQK
    const kr = k.view(sc.r.at(T), 0, [T * DR]);
    this.takeRope(kr, kva, T, KR + DR, KR);
    this.rope.forward(kr, kr, b.positions, T, 1);
    k.copyCols(kf, kvb, T * NH, DN, DQK, 0, 1, DN + DV, 0, 1, false);
    for (let h = 0; h < NH; h++) k.copyCols(kf, kr, T, DR, NH * DQK, h * DQK + DN, 1, DR, 0, 1, false);
    if (DV < DQK) k.zero(vf);
    k.copyCols(vf, kvb, T * NH, DV, DQK, 0, 1, DN + DV, DN, 1, false);
  }

  // out (T,C) <- xn (T,C); fills s
  forward(out: F32, xn: F32, w: Views, s: MlaSaved, sc: MlaScratch, b: BatchInputs): void {
    const { k, c, m, DQK } = this;
    const { T } = b, { NH } = c;
    this.qkv(xn, w, s, sc, b);
    const att = s.att.at(T), ao = s.ao.at(T);
    k.attentionForward(att, s.lse.at(T), s.q.at(T), s.k.at(T), s.v.at(T), b.cuSeqlens, T, NH, NH, DQK, m.scale, true);
    k.copyCols(ao, att, T * NH, m.DV, m.DV, 0, 1, DQK, 0, 1, false);
    k.linearForward(out, ao, w.get("self_attn.o_proj.weight")!, w.get("self_attn.o_proj.bias") ?? null, T, NH * m.DV, c.C);
  }

  /** Inference with a KV cache (keys after RoPE, padded values): SYNC POINT as Attention's. */
  async forwardCached(out: F32, xn: F32, w: Views, s: MlaSaved, sc: MlaScratch, b: BatchInputs, cache: LayerKv): Promise<void> {
    const { k, c, m, DQK } = this;
    const { T } = b, { NH } = c;
    this.qkv(xn, w, s, sc, b);
    const past = cache.append(await k.read(s.k.at(T)), await k.read(s.v.at(T)), T);
    const att = s.att.at(T), ao = s.ao.at(T);
    k.upload(att, decodeAttention(await k.read(s.q.at(T)), cache, past, T, NH, NH, DQK, m.scale));
    k.copyCols(ao, att, T * NH, m.DV, m.DV, 0, 1, DQK, 0, 1, false);
    k.linearForward(out, ao, w.get("self_attn.o_proj.weight")!, w.get("self_attn.o_proj.bias") ?? null, T, NH * m.DV, c.C);
  }

  // dxn (T,C) += ; g += ; from dout (T,C)
  backward(dxn: F32, g: Views, dout: F32, xn: F32, w: Views, s: MlaSaved, sc: MlaScratch, b: BatchInputs): void {
    const { k, c, m, DQK } = this;
    const { T } = b, { NH, C } = c, { QR, KR, DR, DN, DV } = m;
    const dao = sc.dao.at(T), datt = sc.datt.at(T), dq = sc.dq.at(T), dk = sc.dk.at(T), dv = sc.dv.at(T);
    k.zero(dao);
    k.linearBackward(dao, g.get("self_attn.o_proj.weight")!, g.get("self_attn.o_proj.bias") ?? null, dout, s.ao.at(T),
      w.get("self_attn.o_proj.weight")!, T, NH * DV, C);
    k.zero(datt);
    k.copyCols(datt, dao, T * NH, DV, DQK, 0, 1, DV, 0, 1, false);
    k.zero(dq); k.zero(dk); k.zero(dv);
    k.attentionBackward(dq, dk, dv, datt, s.q.at(T), s.k.at(T), s.v.at(T), s.att.at(T), s.lse.at(T), b.cuSeqlens, T, NH, NH, DQK, m.scale, true);
    // kv path: d(kv_b output) from k_nope and v; d(shared k_rope) summed over heads in head order
    const dkvb = sc.kvb.at(T);
    k.copyCols(dkvb, dk, T * NH, DN, DN + DV, 0, 1, DQK, 0, 1, false);
    k.copyCols(dkvb, dv, T * NH, DV, DN + DV, DN, 1, DQK, 0, 1, false);
    const dkr = k.view(sc.r.at(T), 0, [T * DR]), dkrPre = k.view(sc.rPre.at(T), 0, [T * DR]);
    k.zero(dkr);
    for (let h = 0; h < NH; h++) k.copyCols(dkr, dk, T, DR, DR, 0, 1, NH * DQK, h * DQK + DN, 1, true);
    k.zero(dkrPre);
    this.rope.backward(dkrPre, dkr, b.positions, T, 1);
    const dkvn = sc.dkvn.at(T), dkvp = sc.dkvp.at(T), dkva = sc.dkva.at(T);
    k.zero(dkvn);
    k.linearBackward(dkvn, g.get("self_attn.kv_b_proj.weight")!, null, dkvb, s.kvn.at(T), w.get("self_attn.kv_b_proj.weight")!, T, KR, NH * (DN + DV));
    k.zero(dkvp);
    this.kvNorm.backward(dkvp, g.get("self_attn.kv_a_layernorm.weight")!, dkvn, s.kvp.at(T), w.get("self_attn.kv_a_layernorm.weight")!, s.rstdKV.at(T), T);
    k.copyCols(dkva, dkvp, T, KR, KR + DR, 0, 1, KR, 0, 1, false);
    this.putRope(dkva, dkrPre, T, KR + DR, KR);
    k.linearBackward(dxn, g.get("self_attn.kv_a_proj_with_mqa.weight")!, g.get("self_attn.kv_a_proj_with_mqa.bias") ?? null, dkva, xn,
      w.get("self_attn.kv_a_proj_with_mqa.weight")!, T, C, KR + DR);
    // q path: rope dims back through RoPE and the permutation, in place in dq
    const dqr = k.view(sc.r.at(T), 0, [T * NH * DR]), dqrPre = k.view(sc.rPre.at(T), 0, [T * NH * DR]);
    k.copyCols(dqr, dq, T * NH, DR, DR, 0, 1, DQK, DN, 1, false);
    k.zero(dqrPre);
    this.rope.backward(dqrPre, dqr, b.positions, T, NH);
    this.putRope(dq, dqrPre, T * NH, DQK, DN);
    if (QR) {
      const dqan = sc.dqan!.at(T), dqa = sc.dqa!.at(T);
      k.zero(dqan);
      k.linearBackward(dqan, g.get("self_attn.q_b_proj.weight")!, null, dq, s.qan!.at(T), w.get("self_attn.q_b_proj.weight")!, T, QR, NH * DQK);
      k.zero(dqa);
      this.qNorm!.backward(dqa, g.get("self_attn.q_a_layernorm.weight")!, dqan, s.qa!.at(T), w.get("self_attn.q_a_layernorm.weight")!, s.rstdQ!.at(T), T);
      k.linearBackward(dxn, g.get("self_attn.q_a_proj.weight")!, g.get("self_attn.q_a_proj.bias") ?? null, dqa, xn, w.get("self_attn.q_a_proj.weight")!, T, C, QR);
    } else {
      k.linearBackward(dxn, g.get("self_attn.q_proj.weight")!, null, dq, xn, w.get("self_attn.q_proj.weight")!, T, C, NH * DQK);
    }
  }
}
