// One pre-norm decoder layer (HF LlamaDecoderLayer and its Qwen2/Qwen3/MoE/DeepSeek-V3 twins):
//   xmid = xin + Attn(RMSNorm1(xin));  xout = xmid + FFN(RMSNorm2(xmid))
// Attn is GQA attention or DeepSeek's latent attention (MLA); FFN is the dense SwiGLU MLP, or on
// the sparse layers of a MoE model the MoE block.
// forward saves what backward needs in a LayerSaved; with activation checkpointing the model
// keeps only xin and recomputes forward into one shared LayerSaved before backward.
// forward/backward are async: a MoE layer reads its routing to the host (a sync point).
import type { Kernels } from "../kernels/index.ts";
import type { DecoderConfig } from "./config.ts";
import type { Arena, BatchInputs, Buf, F32 } from "./blocks/arena.ts";
import { Attention, type AttnSaved, type AttnScratch, type LayerKv, type Views } from "./blocks/attention.ts";
import { Mlp, type MlpSaved, type MlpScratch } from "./blocks/mlp.ts";
import { Mla, type MlaSaved, type MlaScratch } from "./blocks/mla.ts";
import { MoeBlock, type ExpertCore, type MoeSaved, type MoeScratch } from "./blocks/moe.ts";
import type { RouterStats } from "./blocks/router.ts";
import { RMSNorm } from "./blocks/norm.ts";
import type { Rope } from "./blocks/rope.ts";

/** mlp / moe: the saved activations of the layer's FFN kind (both with checkpointing's shared set). */
export interface LayerSaved {
  xn1: Buf; rstd1: Buf; attn: AttnSaved | null; mla: MlaSaved | null; xmid: Buf; xn2: Buf; rstd2: Buf; mlp: MlpSaved | null; moe: MoeSaved | null;
}

/** Shared by all layers: the branch output (T,C), d(normed input) (T,C), block scratch. */
export interface LayerScratch {
  branch: Buf; dxn: Buf; attn: AttnScratch | null; mla: MlaScratch | null; mlp: MlpScratch | null; moe: MoeScratch | null;
}

export class DecoderLayer {
  readonly attn: Attention | null;
  private mla: Mla | null;
  private mlp: Mlp;
  private moe: MoeBlock | null;
  private norm: RMSNorm;
  /** Per layer: its index among the sparse layers, or -1 for a dense one. */
  readonly sparseIndex: number[];

  /** Per token and layer: the KV cache's row width (keys and values, after RoPE). */
  readonly kvWidth: number;

  constructor(private k: Kernels, private c: DecoderConfig, rope: Rope, stats: RouterStats | null) {
    this.attn = c.mla ? null : new Attention(k, c, rope);
    this.mla = c.mla ? new Mla(k, c, rope) : null;
    this.kvWidth = this.mla ? this.mla.kvWidth : c.NKV * c.HS;
    this.mlp = new Mlp(k, c.C, c.I);
    this.moe = c.moe ? new MoeBlock(k, c, stats!) : null;
    this.norm = new RMSNorm(k, c.C, c.eps);
    let n = 0;
    this.sparseIndex = Array.from({ length: c.L }, (_, l) => (c.moe?.sparse[l] ? n++ : -1));
  }

  /** A plan's expert computation for every sparse layer (expert parallelism). */
  setExpertCore(core: ExpertCore): void {
    if (!this.moe) throw new Error(`model ${this.c.modelType}: no MoE layers to place experts of`);
    this.moe.core = core;
  }

  private isSparse(l: number): boolean {
    return this.sparseIndex[l] >= 0;
  }

  /** Saved activations for the given layers' FFN kinds (one layer, or every layer with checkpointing). */
  allocSaved(a: Arena, name: string, layers: number[]): LayerSaved {
    const C = this.norm.C;
    const dense = layers.some((l) => !this.isSparse(l)), sparse = layers.some((l) => this.isSparse(l));
    return {
      xn1: a.buf(C, `${name}.xn1`), rstd1: a.buf(1, `${name}.rstd1`),
      attn: this.attn?.allocSaved(a, `${name}.attn`) ?? null, mla: this.mla?.allocSaved(a, `${name}.mla`) ?? null,
      xmid: a.buf(C, `${name}.xmid`), xn2: a.buf(C, `${name}.xn2`), rstd2: a.buf(1, `${name}.rstd2`),
      mlp: dense ? this.mlp.allocSaved(a, `${name}.mlp`) : null,
      moe: sparse ? this.moe!.allocSaved(a, `${name}.moe`) : null,
    };
  }

  allocScratch(a: Arena): LayerScratch {
    const C = this.norm.C;
    const dense = this.sparseIndex.some((i) => i < 0);
    return {
      branch: a.buf(C, "layer.branch"), dxn: a.buf(C, "layer.dxn"),
      attn: this.attn?.allocScratch(a) ?? null, mla: this.mla?.allocScratch(a) ?? null,
      mlp: dense ? this.mlp.allocScratch(a) : null, moe: this.moe ? this.moe.allocScratch(a) : null,
    };
  }

  // xout (T,C) <- xin (T,C) through layer l; fills s
  async forward(l: number, xout: F32, xin: F32, w: Views, s: LayerSaved, sc: LayerScratch, b: BatchInputs, kv?: LayerKv): Promise<void> {
    const { k } = this;
    const T = b.T;
    const xn1 = s.xn1.at(T), xmid = s.xmid.at(T), xn2 = s.xn2.at(T), branch = sc.branch.at(T);
    this.norm.forward(xn1, s.rstd1.at(T), xin, w.get("input_layernorm.weight")!, T);
    if (this.mla) {
      if (kv) await this.mla.forwardCached(branch, xn1, w, s.mla!, sc.mla!, b, kv);
      else this.mla.forward(branch, xn1, w, s.mla!, sc.mla!, b);
    } else if (kv) await this.attn!.forwardCached(branch, xn1, w, s.attn!, b, kv);
    else await this.attn!.forward(branch, xn1, w, s.attn!, b); // awaits only a sequence-parallel core's all-to-alls
    k.add(xmid, xin, branch);
    this.norm.forward(xn2, s.rstd2.at(T), xmid, w.get("post_attention_layernorm.weight")!, T);
    if (this.isSparse(l)) await this.moe!.forward(branch, xn2, w, s.moe!, sc.moe!, b, this.sparseIndex[l]);
    else this.mlp.forward(branch, xn2, w, s.mlp!, b);
    k.add(xout, xmid, branch);
  }

  // dres (T,C): in d(xout), out d(xin) (residual: the branches' input grads accumulate into it)
  async backward(l: number, dres: F32, g: Views, xin: F32, w: Views, s: LayerSaved, sc: LayerScratch, b: BatchInputs): Promise<void> {
    const { k } = this;
    const T = b.T;
    const dxn = sc.dxn.at(T);
    k.zero(dxn);
    if (this.isSparse(l)) await this.moe!.backward(dxn, g, dres, s.xn2.at(T), w, s.moe!, sc.moe!, b);
    else this.mlp.backward(dxn, g, dres, s.xn2.at(T), w, s.mlp!, sc.mlp!, b);
    this.norm.backward(dres, g.get("post_attention_layernorm.weight")!, dxn, s.xmid.at(T), w.get("post_attention_layernorm.weight")!, s.rstd2.at(T), T);
    k.zero(dxn);
    if (this.mla) this.mla.backward(dxn, g, dres, s.xn1.at(T), w, s.mla!, sc.mla!, b);
    else await this.attn!.backward(dxn, g, dres, s.xn1.at(T), w, s.attn!, sc.attn!, b);
    this.norm.backward(dres, g.get("input_layernorm.weight")!, dxn, xin, w.get("input_layernorm.weight")!, s.rstd1.at(T), T);
  }
}
