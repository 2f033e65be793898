// Rotary embedding tables (HF default, llama3 or yarn inv_freq; yarn also scales cos/sin by its
// attention factor), uploaded once: cos/sin (P, HS/2) indexed
// by each token's position id (positions restart per packed sample, so P bounds positions).
import { ropeCosSin, ropeInvFreq, type Kernels, type RopeScaling } from "../../kernels/index.ts";
import type { F32, I32 } from "./arena.ts";

export class Rope {
  readonly cos: F32;
  readonly sin: F32;

  constructor(private k: Kernels, readonly HS: number, theta: number, scaling: RopeScaling | null, readonly P: number) {
    const inv = ropeInvFreq({ dim: HS, theta, scaling });
    const t = ropeCosSin(inv, P, scaling?.rope_type === "yarn" ? (scaling.attention_factor ?? 1) : 1);
    this.cos = k.alloc([P, HS / 2], "f32", { shared: false, name: "rope.cos" });
    this.sin = k.alloc([P, HS / 2], "f32", { shared: false, name: "rope.sin" });
    k.upload(this.cos, t.cos);
    k.upload(this.sin, t.sin);
  }

  /** M-RoPE: per-token tables (T, HS/2) (kernels sectionedCosSin) into rows 0..T-1, to be used
   *  with positions 0..T-1. */
  setRows(cos: Float32Array, sin: Float32Array): void {
    const n = cos.length;
    if (n > this.cos.numel) throw new Error(`rope: ${n / (this.HS / 2)} per-token rows exceed the table's ${this.P}`);
    this.k.upload(n === this.cos.numel ? this.cos : this.k.view(this.cos, 0, [n]), cos);
    this.k.upload(n === this.sin.numel ? this.sin : this.k.view(this.sin, 0, [n]), sin);
  }

  // out (T,NH,HS) <- inp (T,NH,HS) rotated by positions (T); out may alias inp
  forward(out: F32, inp: F32, positions: I32, T: number, NH: number): void {
    this.k.ropeForward(out, inp, this.cos, this.sin, positions, T, NH, this.HS);
  }

  // dinp (T,NH,HS) += dout rotated back
  backward(dinp: F32, dout: F32, positions: I32, T: number, NH: number): void {
    this.k.ropeBackward(dinp, dout, this.cos, this.sin, positions, T, NH, this.HS);
  }
}
