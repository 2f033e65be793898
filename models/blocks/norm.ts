// RMSNorm (HF LlamaRMSNorm in f32) as a module: forward saves rstd (N); backward needs the input.
// Used for the pre-attention / pre-MLP norms (N = T rows of C), the final norm, and Qwen3's
// per-head q/k norm (N = T*NH rows of HS).
import type { Kernels } from "../../kernels/index.ts";
import type { F32 } from "./arena.ts";

export class RMSNorm {
  constructor(private k: Kernels, readonly C: number, readonly eps: number) {}

  // out (N,C), rstd (N) <- inp (N,C), weight (C)
  forward(out: F32, rstd: F32, inp: F32, weight: F32, N: number): void {
    this.k.rmsnormForward(out, rstd, inp, weight, N, this.C, this.eps);
  }

  // dinp (N,C) +=, dweight (C) += <- dout (N,C), inp (N,C), weight (C), rstd (N)
  backward(dinp: F32, dweight: F32 | null, dout: F32, inp: F32, weight: F32, rstd: F32, N: number): void {
    this.k.rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, this.C);
  }
}
