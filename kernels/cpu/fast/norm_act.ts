// Fast CPU ops, part 3: LayerNorm and the GELU family as single-pass row loops (no allocation,
// f64 only in the row reductions). QuickGELU uses fexp like SwiGLU; the exact GELU keeps the
// f64 erf of ../erf.ts (it runs only in the vision merger, one (N/4, 4D) tensor per image).
import type { GeluKind } from "../../ops.ts";
import { erf } from "../erf.ts";
import { fexp } from "./fexp.ts";

type F32 = Float32Array;

const INV_SQRT_2PI = 0.3989422804014327;

export function normActOps() {
  return {
    layernormForward(out: F32, mean: F32, rstd: F32, inp: F32, weight: F32, bias: F32, N: number, C: number, eps: number): void {
      for (let n = 0; n < N; n++) {
        const r0 = n * C;
        let s = 0;
        for (let c = 0; c < C; c++) s += inp[r0 + c];
        const mu = s / C;
        let v = 0;
        for (let c = 0; c < C; c++) {
          const d = inp[r0 + c] - mu;
          v += d * d;
        }
        const r = 1 / Math.sqrt(v / C + eps);
        mean[n] = mu;
        rstd[n] = r;
        for (let c = 0; c < C; c++) out[r0 + c] = (inp[r0 + c] - mu) * r * weight[c] + bias[c];
      }
    },

    layernormBackward(dinp: F32, dweight: F32 | null, dbias: F32 | null, dout: F32, inp: F32, weight: F32,
      mean: F32, rstd: F32, N: number, C: number): void {
      for (let n = 0; n < N; n++) {
        const r0 = n * C, mu = mean[n], r = rstd[n];
        let mg = 0, mgx = 0;
        for (let c = 0; c < C; c++) {
          const g = dout[r0 + c] * weight[c];
          mg += g;
          mgx += g * (inp[r0 + c] - mu);
        }
        mg /= C;
        mgx *= r / C;
        for (let c = 0; c < C; c++) {
          const xhat = (inp[r0 + c] - mu) * r, d = dout[r0 + c];
          dinp[r0 + c] += r * (d * weight[c] - mg - xhat * mgx);
        }
        if (dweight) for (let c = 0; c < C; c++) dweight[c] += dout[r0 + c] * (inp[r0 + c] - mu) * r;
        if (dbias) for (let c = 0; c < C; c++) dbias[c] += dout[r0 + c];
      }
    },

    geluForward(out: F32, inp: F32, N: number, kind: GeluKind): void {
      if (kind === "quick_gelu") {
        for (let i = 0; i < N; i++) {
          const x = inp[i];
          out[i] = x / (1 + fexp(-1.702 * x));
        }
      } else {
        for (let i = 0; i < N; i++) {
          const x = inp[i];
          out[i] = 0.5 * x * (1 + erf(x * Math.SQRT1_2));
        }
      }
    },

    geluBackward(dinp: F32, dout: F32, inp: F32, N: number, kind: GeluKind): void {
      if (kind === "quick_gelu") {
        for (let i = 0; i < N; i++) {
          const x = inp[i];
          const s = 1 / (1 + fexp(-1.702 * x));
          dinp[i] += dout[i] * (s + 1.702 * x * s * (1 - s));
        }
      } else {
        for (let i = 0; i < N; i++) {
          const x = inp[i];
          dinp[i] += dout[i] * (0.5 * (1 + erf(x * Math.SQRT1_2)) + x * Math.exp(-0.5 * x * x) * INV_SQRT_2PI);
        }
      }
    },
  };
}
