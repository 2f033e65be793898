// SwiGLU MLP (HF LlamaMLP): out = down( silu(gate(xn)) * up(xn) ), explicit autograd.
// Shapes: xn (T,C), gate/up/h (T,I), out (T,C).
import type { Kernels } from "../../kernels/index.ts";
import type { DecoderConfig } from "../config.ts";
import type { Arena, BatchInputs, Buf, F32 } from "./arena.ts";
import type { Views } from "./attention.ts";

export interface MlpSaved { gate: Buf; up: Buf; h: Buf }
export interface MlpScratch { dh: Buf; dgate: Buf; dup: Buf }

export class Mlp {
  constructor(private k: Kernels, private c: DecoderConfig) {}

  allocSaved(a: Arena, name: string): MlpSaved {
    const I = this.c.I;
    return { gate: a.buf(I, `${name}.gate`), up: a.buf(I, `${name}.up`), h: a.buf(I, `${name}.h`) };
  }

  allocScratch(a: Arena): MlpScratch {
    const I = this.c.I;
    return { dh: a.buf(I, "mlp.dh"), dgate: a.buf(I, "mlp.dgate"), dup: a.buf(I, "mlp.dup") };
  }

  // out (T,C) <- xn (T,C)
  forward(out: F32, xn: F32, w: Views, s: MlpSaved, b: BatchInputs): void {
    const { k } = this;
    const { C, I } = this.c;
    const T = b.T;
    const gate = s.gate.at(T), up = s.up.at(T), h = s.h.at(T);
    k.linearForward(gate, xn, w.get("mlp.gate_proj.weight")!, null, T, C, I);
    k.linearForward(up, xn, w.get("mlp.up_proj.weight")!, null, T, C, I);
    k.swigluForward(h, gate, up, T * I);
    k.linearForward(out, h, w.get("mlp.down_proj.weight")!, null, T, I, C);
  }

  // dxn (T,C) += ; g += ; from dout (T,C)
  backward(dxn: F32, g: Views, dout: F32, xn: F32, w: Views, s: MlpSaved, sc: MlpScratch, b: BatchInputs): void {
    const { k } = this;
    const { C, I } = this.c;
    const T = b.T;
    const dh = sc.dh.at(T), dgate = sc.dgate.at(T), dup = sc.dup.at(T);
    k.zero(dh);
    k.linearBackward(dh, g.get("mlp.down_proj.weight")!, null, dout, s.h.at(T), w.get("mlp.down_proj.weight")!, T, I, C);
    k.zero(dgate); k.zero(dup);
    k.swigluBackward(dgate, dup, dh, s.gate.at(T), s.up.at(T), T * I);
    k.linearBackward(dxn, g.get("mlp.gate_proj.weight")!, null, dgate, xn, w.get("mlp.gate_proj.weight")!, T, C, I);
    k.linearBackward(dxn, g.get("mlp.up_proj.weight")!, null, dup, xn, w.get("mlp.up_proj.weight")!, T, C, I);
  }
}
