// One pre-norm decoder layer (HF LlamaDecoderLayer and its Qwen2/Qwen3 twins):
//   xmid = xin + Attn(RMSNorm1(xin));  xout = xmid + MLP(RMSNorm2(xmid))
// forward saves what backward needs in a LayerSaved; with activation checkpointing the model
// keeps only xin and recomputes forward into one shared LayerSaved before backward.
import type { Kernels } from "../kernels/index.ts";
import type { DecoderConfig } from "./config.ts";
import type { Arena, BatchInputs, Buf, F32 } from "./blocks/arena.ts";
import { Attention, type AttnSaved, type AttnScratch, type LayerKv, type Views } from "./blocks/attention.ts";
import { Mlp, type MlpSaved, type MlpScratch } from "./blocks/mlp.ts";
import { RMSNorm } from "./blocks/norm.ts";
import type { Rope } from "./blocks/rope.ts";

export interface LayerSaved {
  xn1: Buf; rstd1: Buf; attn: AttnSaved; xmid: Buf; xn2: Buf; rstd2: Buf; mlp: MlpSaved;
}

/** Shared by all layers: the branch output (T,C), d(normed input) (T,C), block scratch. */
export interface LayerScratch {
  branch: Buf; dxn: Buf; attn: AttnScratch; mlp: MlpScratch;
}

export class DecoderLayer {
  private attn: Attention;
  private mlp: Mlp;
  private norm: RMSNorm;

  constructor(private k: Kernels, c: DecoderConfig, rope: Rope) {
    this.attn = new Attention(k, c, rope);
    this.mlp = new Mlp(k, c);
    this.norm = new RMSNorm(k, c.C, c.eps);
  }

  allocSaved(a: Arena, name: string): LayerSaved {
    const C = this.norm.C;
    return {
      xn1: a.buf(C, `${name}.xn1`), rstd1: a.buf(1, `${name}.rstd1`), attn: this.attn.allocSaved(a, `${name}.attn`),
      xmid: a.buf(C, `${name}.xmid`), xn2: a.buf(C, `${name}.xn2`), rstd2: a.buf(1, `${name}.rstd2`),
      mlp: this.mlp.allocSaved(a, `${name}.mlp`),
    };
  }

  allocScratch(a: Arena): LayerScratch {
    const C = this.norm.C;
    return { branch: a.buf(C, "layer.branch"), dxn: a.buf(C, "layer.dxn"), attn: this.attn.allocScratch(a), mlp: this.mlp.allocScratch(a) };
  }

  // xout (T,C) <- xin (T,C); fills s
  forward(xout: F32, xin: F32, w: Views, s: LayerSaved, sc: LayerScratch, b: BatchInputs): void {
    const { k } = this;
    const T = b.T;
    const xn1 = s.xn1.at(T), xmid = s.xmid.at(T), xn2 = s.xn2.at(T), branch = sc.branch.at(T);
    this.norm.forward(xn1, s.rstd1.at(T), xin, w.get("input_layernorm.weight")!, T);
    this.attn.forward(branch, xn1, w, s.attn, b);
    k.add(xmid, xin, branch);
    this.norm.forward(xn2, s.rstd2.at(T), xmid, w.get("post_attention_layernorm.weight")!, T);
    this.mlp.forward(branch, xn2, w, s.mlp, b);
    k.add(xout, xmid, branch);
  }

  /** Inference: forward with the attention reading/extending a KV cache. */
  async forwardCached(xout: F32, xin: F32, w: Views, s: LayerSaved, sc: LayerScratch, b: BatchInputs, kv: LayerKv): Promise<void> {
    const { k } = this;
    const T = b.T;
    const xn1 = s.xn1.at(T), xmid = s.xmid.at(T), xn2 = s.xn2.at(T), branch = sc.branch.at(T);
    this.norm.forward(xn1, s.rstd1.at(T), xin, w.get("input_layernorm.weight")!, T);
    await this.attn.forwardCached(branch, xn1, w, s.attn, b, kv);
    k.add(xmid, xin, branch);
    this.norm.forward(xn2, s.rstd2.at(T), xmid, w.get("post_attention_layernorm.weight")!, T);
    this.mlp.forward(branch, xn2, w, s.mlp, b);
    k.add(xout, xmid, branch);
  }

  // dres (T,C): in d(xout), out d(xin) (residual: the branches' input grads accumulate into it)
  backward(dres: F32, g: Views, xin: F32, w: Views, s: LayerSaved, sc: LayerScratch, b: BatchInputs): void {
    const { k } = this;
    const T = b.T;
    const dxn = sc.dxn.at(T);
    k.zero(dxn);
    this.mlp.backward(dxn, g, dres, s.xn2.at(T), w, s.mlp, sc.mlp, b);
    this.norm.backward(dres, g.get("post_attention_layernorm.weight")!, dxn, s.xmid.at(T), w.get("post_attention_layernorm.weight")!, s.rstd2.at(T), T);
    k.zero(dxn);
    this.attn.backward(dxn, g, dres, s.xn1.at(T), w, s.attn, sc.attn, b);
    this.norm.backward(dres, g.get("input_layernorm.weight")!, dxn, xin, w.get("input_layernorm.weight")!, s.rstd1.at(T), T);
  }
}
