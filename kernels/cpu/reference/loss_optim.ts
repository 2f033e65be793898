// Reference LM-head cross-entropy (full logits row in f64), sum of squares, PyTorch AdamW.

import type { AdamWParams } from "../../ops.ts";

type F32 = Float32Array;
type I32 = Int32Array;

// loss (1) += sum over valid t of lse(z_t) - z_t[target]; z_t = W (V,C) @ hidden_t (C)
// dz = (softmax(z) - onehot) * gradScale; dhidden_t += dz @ W; dW += dz^T hidden_t
// dweight aliasing weight (ops.ts): the gradient replaces the weight once it is no longer read
export function crossEntropyFused(loss: F32, dhidden: F32 | null, dweight: F32 | null, hidden: F32, weight: F32, targets: I32,
  T: number, C: number, V: number, gradScale: number): void {
  if (dweight && dweight.buffer === weight.buffer && dweight.byteOffset === weight.byteOffset) {
    const g = new Float32Array(V * C);
    crossEntropyFused(loss, dhidden, g, hidden, weight, targets, T, C, V, gradScale);
    weight.set(g);
    return;
  }
  let total = 0;
  const z = new Float64Array(V);
  for (let t = 0; t < T; t++) {
    const y = targets[t];
    if (y === -100) continue;
    let m = -Infinity;
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += hidden[t * C + c] * weight[v * C + c];
      z[v] = s;
      m = Math.max(m, s);
    }
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(z[v] - m);
    const lse = m + Math.log(sum);
    total += lse - z[y];
    for (let v = 0; v < V; v++) {
      const dz = (Math.exp(z[v] - lse) - (v === y ? 1 : 0)) * gradScale;
      for (let c = 0; c < C; c++) {
        if (dhidden) dhidden[t * C + c] += dz * weight[v * C + c];
        if (dweight) dweight[v * C + c] += dz * hidden[t * C + c];
      }
    }
  }
  loss[0] += total;
}

export function sumSquares(bufs: readonly F32[]): number {
  let s = 0;
  for (const b of bufs) for (let i = 0; i < b.length; i++) s += b[i] * b[i];
  return s;
}

const f = Math.fround;

// torch.optim.AdamW single-tensor step, each elementwise op rounded to f32 as torch does.
export function adamw(param: F32, grad: F32, m: F32, v: F32, p: AdamWParams): void {
  const bc1 = 1 - Math.pow(p.beta1, p.step);
  const bc2 = 1 - Math.pow(p.beta2, p.step);
  const stepSize = p.lr / bc1;
  const bc2Sqrt = Math.sqrt(bc2);
  const decay = 1 - p.lr * p.weightDecay;
  for (let i = 0; i < param.length; i++) {
    const g = p.gradScale === 1 ? grad[i] : f(grad[i] * p.gradScale);
    const w = f(param[i] * decay);
    m[i] = f(f(m[i] * p.beta1) + f(g * (1 - p.beta1)));
    v[i] = f(f(v[i] * p.beta2) + f(f(g * g) * (1 - p.beta2)));
    const denom = f(f(Math.sqrt(v[i]) / bc2Sqrt) + p.eps);
    param[i] = f(w - f(stepSize * f(m[i] / denom)));
  }
}
