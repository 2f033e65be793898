// Token embedding and the LM head (final RMSNorm + lm_head + next-token cross-entropy, fused so
// the (T,V) logits are never materialised in training). With tied embeddings the head weight is
// the embedding table (V,C) and its gradient lands in the embedding's gradient.
import type { Kernels } from "../../kernels/index.ts";
import type { DecoderConfig } from "../config.ts";
import type { Arena, BatchInputs, Buf, F32 } from "./arena.ts";
import { RMSNorm } from "./norm.ts";

export class Embedding {
  constructor(private k: Kernels, private c: DecoderConfig) {}
  // out (T,C) <- table (V,C)[ids (T)]
  forward(out: F32, table: F32, b: BatchInputs): void {
    this.k.embeddingForward(out, b.ids, table, b.T, this.c.C, this.c.V);
  }
  // dtable (V,C) += dout (T,C) scattered by ids
  backward(dtable: F32, dout: F32, b: BatchInputs): void {
    this.k.embeddingBackward(dtable, dout, b.ids, b.T, this.c.C, this.c.V);
  }
}

export class LmHead {
  private norm: RMSNorm;
  /** Saved: normed hidden (T,C) and its rstd (T); scratch: d(normed hidden) (T,C). */
  readonly xf: Buf;
  readonly rstd: Buf;
  readonly dxf: Buf;

  constructor(private k: Kernels, private c: DecoderConfig, a: Arena) {
    this.norm = new RMSNorm(k, c.C, c.eps);
    this.xf = a.buf(c.C, "head.xf");
    this.rstd = a.buf(1, "head.rstd");
    this.dxf = a.buf(c.C, "head.dxf");
  }

  /** loss (1) += sum CE over valid targets; with grads, dxf <- gradScale * dCE/dxf and
   *  dweight (V,C) += gradScale * dCE/dweight (the fused kernel does forward and backward at once). */
  forwardLoss(loss: F32, dweight: F32 | null, x: F32, normW: F32, weight: F32, b: BatchInputs, gradScale: number): void {
    const { k, c } = this;
    const T = b.T;
    const xf = this.xf.at(T);
    this.norm.forward(xf, this.rstd.at(T), x, normW, T);
    const dxf = dweight ? this.dxf.at(T) : null;
    if (dxf) k.zero(dxf);
    k.crossEntropyFused(loss, dxf, dweight, xf, weight, b.targets, T, c.C, c.V, gradScale);
  }

  // dx (T,C) += final-norm backward of dxf; dnormW (C) +=
  backward(dx: F32, dnormW: F32, x: F32, normW: F32, T: number): void {
    this.norm.backward(dx, dnormW, this.dxf.at(T), x, normW, this.rstd.at(T), T);
  }

  // logits (T,V) <- norm(x (T,C)) @ weight (V,C)^T   (inference / evaluation)
  logits(out: F32, x: F32, normW: F32, weight: F32, T: number): void {
    const xf = this.xf.at(T);
    this.norm.forward(xf, this.rstd.at(T), x, normW, T);
    this.k.linearForward(out, xf, weight, null, T, this.c.C, this.c.V);
  }
}
