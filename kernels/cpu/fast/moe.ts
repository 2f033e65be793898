// Fast MoE combine: row-at-a-time loops over contiguous (C) rows, f32 accumulation, routes added
// in k order (the same order as the reference, so results are deterministic).

type F32 = Float32Array;
type I32 = Int32Array;

// out (T,C) <- sum_k weights[t,k] * rows[idx[t,k]]
export function moeCombine(out: F32, rows: F32, idx: I32, weights: F32, T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    const o = out.subarray(t * C, (t + 1) * C);
    o.fill(0);
    for (let k = 0; k < K; k++) {
      const w = weights[t * K + k];
      const base = idx[t * K + k] * C;
      for (let c = 0; c < C; c++) o[c] += w * rows[base + c];
    }
  }
}

// drows[idx[t,k]] += weights[t,k] * dout[t]; dweights[t,k] += dout[t] . rows[idx[t,k]]
export function moeCombineBackward(drows: F32 | null, dweights: F32 | null, dout: F32, rows: F32, idx: I32, weights: F32,
  T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    const d = t * C;
    for (let k = 0; k < K; k++) {
      const base = idx[t * K + k] * C, w = weights[t * K + k];
      if (dweights) {
        let dot = 0;
        for (let c = 0; c < C; c++) dot += dout[d + c] * rows[base + c];
        dweights[t * K + k] += dot;
      }
      if (drows) for (let c = 0; c < C; c++) drows[base + c] += w * dout[d + c];
    }
  }
}
