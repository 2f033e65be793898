// Rotary embedding tables (HF default or llama3 inv_freq), uploaded once: cos/sin (P, HS/2) indexed
// by each token's position id (positions restart per packed sample, so P bounds positions).
import { ropeCosSin, ropeInvFreq, type Kernels, type RopeScaling } from "../../kernels/index.ts";
import type { F32, I32 } from "./arena.ts";

export class Rope {
  readonly cos: F32;
  readonly sin: F32;

  constructor(private k: Kernels, readonly HS: number, theta: number, scaling: RopeScaling | null, readonly P: number) {
    const inv = ropeInvFreq({ dim: HS, theta, scaling });
    const t = ropeCosSin(inv, P);
    this.cos = k.alloc([P, HS / 2], "f32", { shared: false, name: "rope.cos" });
    this.sin = k.alloc([P, HS / 2], "f32", { shared: false, name: "rope.sin" });
    k.upload(this.cos, t.cos);
    k.upload(this.sin, t.sin);
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
