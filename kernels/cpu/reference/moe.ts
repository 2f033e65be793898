// Reference MoE combine (the obvious loops, accumulating in f64, routes summed in k order) and the
// strided column copy MLA attention splits and joins heads with.

type F32 = Float32Array;
type I32 = Int32Array;

// out (T,C) <- sum_k weights[t,k] * rows[idx[t,k]]
export function moeCombine(out: F32, rows: F32, idx: I32, weights: F32, T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += weights[t * K + k] * rows[idx[t * K + k] * C + c];
      out[t * C + c] = s;
    }
  }
}

// drows[idx[t,k]] += weights[t,k] * dout[t]; dweights[t,k] += dout[t] . rows[idx[t,k]]
export function moeCombineBackward(drows: F32 | null, dweights: F32 | null, dout: F32, rows: F32, idx: I32, weights: F32,
  T: number, K: number, C: number): void {
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < K; k++) {
      const r = idx[t * K + k], w = weights[t * K + k];
      let dot = 0;
      for (let c = 0; c < C; c++) {
        dot += dout[t * C + c] * rows[r * C + c];
        if (drows) drows[r * C + c] += w * dout[t * C + c];
      }
      if (dweights) dweights[t * K + k] += dot;
    }
  }
}

// dst[n, dstOff + j*dstStride] (+)= src[n, srcOff + j*srcStride]
export function copyCols(dst: F32, src: F32, N: number, width: number, dstW: number, dstOff: number, dstStride: number,
  srcW: number, srcOff: number, srcStride: number, accumulate: boolean): void {
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < width; j++) {
      const d = n * dstW + dstOff + j * dstStride, v = src[n * srcW + srcOff + j * srcStride];
      dst[d] = accumulate ? dst[d] + v : v;
    }
  }
}
