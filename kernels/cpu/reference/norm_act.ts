// Reference ops, part 4: LayerNorm (torch nn.LayerNorm: biased variance, eps inside the sqrt) and
// the GELU family (exact erf form and QuickGELU), plain loops in f64.
import type { GeluKind } from "../../ops.ts";
import { erf } from "../erf.ts";

type F32 = Float32Array;

// out (N,C) <- (x - mean) rstd w + b ; mean, rstd (N)
export function layernormForward(out: F32, mean: F32, rstd: F32, inp: F32, weight: F32, bias: F32, N: number, C: number, eps: number): void {
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += inp[n * C + c];
    const mu = s / C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (inp[n * C + c] - mu) ** 2;
    const r = 1 / Math.sqrt(v / C + eps);
    mean[n] = mu;
    rstd[n] = r;
    for (let c = 0; c < C; c++) out[n * C + c] = (inp[n * C + c] - mu) * r * weight[c] + bias[c];
  }
}

// xhat = (x - mean) rstd, g = dout w:  dx += rstd (g - mean(g) - xhat mean(g xhat)); dw += dout xhat; db += dout
export function layernormBackward(dinp: F32, dweight: F32 | null, dbias: F32 | null, dout: F32, inp: F32, weight: F32,
  mean: F32, rstd: F32, N: number, C: number): void {
  for (let n = 0; n < N; n++) {
    const mu = mean[n], r = rstd[n];
    let mg = 0, mgx = 0;
    for (let c = 0; c < C; c++) {
      const g = dout[n * C + c] * weight[c];
      mg += g;
      mgx += g * (inp[n * C + c] - mu) * r;
    }
    mg /= C;
    mgx /= C;
    for (let c = 0; c < C; c++) {
      const xhat = (inp[n * C + c] - mu) * r;
      dinp[n * C + c] += r * (dout[n * C + c] * weight[c] - mg - xhat * mgx);
      if (dweight) dweight[c] += dout[n * C + c] * xhat;
      if (dbias) dbias[c] += dout[n * C + c];
    }
  }
}

/** act(x) and act'(x) of one GeluKind, in f64. */
export function geluValue(x: number, kind: GeluKind): number {
  if (kind === "quick_gelu") return x / (1 + Math.exp(-1.702 * x));
  return 0.5 * x * (1 + erf(x * Math.SQRT1_2));
}

export function geluGrad(x: number, kind: GeluKind): number {
  if (kind === "quick_gelu") {
    const s = 1 / (1 + Math.exp(-1.702 * x));
    return s + 1.702 * x * s * (1 - s);
  }
  // d/dx x Phi(x) = Phi(x) + x phi(x)
  return 0.5 * (1 + erf(x * Math.SQRT1_2)) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
}

export function geluForward(out: F32, inp: F32, N: number, kind: GeluKind): void {
  for (let i = 0; i < N; i++) out[i] = geluValue(inp[i], kind);
}

export function geluBackward(dinp: F32, dout: F32, inp: F32, N: number, kind: GeluKind): void {
  for (let i = 0; i < N; i++) dinp[i] += dout[i] * geluGrad(inp[i], kind);
}
