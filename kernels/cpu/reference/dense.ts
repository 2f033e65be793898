// Reference ops, part 1: the obvious loops, accumulating in f64, as the ground truth for the fast
// path and every other backend. Speed is irrelevant here; clarity is the point.

type F32 = Float32Array;
type I32 = Int32Array;

// out (M,N) <- alpha * op(a) (M,K) @ op(b) (K,N) + beta * out
export function gemm(out: F32, a: F32, b: F32, M: number, N: number, K: number, transA: boolean, transB: boolean, alpha: number, beta: number): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let p = 0; p < K; p++) {
        const av = transA ? a[p * M + i] : a[i * K + p];
        const bv = transB ? b[j * K + p] : b[p * N + j];
        s += av * bv;
      }
      out[i * N + j] = alpha * s + (beta === 0 ? 0 : beta * out[i * N + j]);
    }
  }
}

// out (N,OC) <- inp (N,C) @ weight (OC,C)^T + bias (OC)
export function linearForward(out: F32, inp: F32, weight: F32, bias: F32 | null, N: number, C: number, OC: number): void {
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < OC; o++) {
      let s = bias ? bias[o] : 0;
      for (let c = 0; c < C; c++) s += inp[n * C + c] * weight[o * C + c];
      out[n * OC + o] = s;
    }
  }
}

// dinp (N,C) += dout @ W; dweight (OC,C) += dout^T @ inp; dbias (OC) += column sums of dout
export function linearBackward(dinp: F32 | null, dweight: F32 | null, dbias: F32 | null, dout: F32, inp: F32, weight: F32, N: number, C: number, OC: number): void {
  if (dinp) {
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let o = 0; o < OC; o++) s += dout[n * OC + o] * weight[o * C + c];
        dinp[n * C + c] += s;
      }
    }
  }
  if (dweight) {
    for (let o = 0; o < OC; o++) {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let n = 0; n < N; n++) s += dout[n * OC + o] * inp[n * C + c];
        dweight[o * C + c] += s;
      }
    }
  }
  if (dbias) {
    for (let o = 0; o < OC; o++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dout[n * OC + o];
      dbias[o] += s;
    }
  }
}

// out (T,C) <- table (V,C)[ids]
export function embeddingForward(out: F32, ids: I32, table: F32, T: number, C: number): void {
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) out[t * C + c] = table[ids[t] * C + c];
}

// dtable (V,C)[ids[t]] += dout (T,C)[t]
export function embeddingBackward(dtable: F32, dout: F32, ids: I32, T: number, C: number): void {
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) dtable[ids[t] * C + c] += dout[t * C + c];
}

// out (N,C) <- inp * rsqrt(mean(inp^2) + eps) * weight; rstd (N)
export function rmsnormForward(out: F32, rstd: F32, inp: F32, weight: F32, N: number, C: number, eps: number): void {
  for (let n = 0; n < N; n++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += inp[n * C + c] * inp[n * C + c];
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[n] = r;
    for (let c = 0; c < C; c++) out[n * C + c] = inp[n * C + c] * r * weight[c];
  }
}

// y_i = x_i r w_i, r = (mean x^2 + eps)^-1/2:  dx_i += r w_i g_i - (r^3 / C) x_i sum_j g_j w_j x_j ;  dw_i += g_i x_i r
export function rmsnormBackward(dinp: F32, dweight: F32 | null, dout: F32, inp: F32, weight: F32, rstd: F32, N: number, C: number): void {
  for (let n = 0; n < N; n++) {
    const r = rstd[n];
    let dot = 0;
    for (let c = 0; c < C; c++) dot += dout[n * C + c] * weight[c] * inp[n * C + c];
    for (let c = 0; c < C; c++) {
      dinp[n * C + c] += r * weight[c] * dout[n * C + c] - ((r * r * r) / C) * inp[n * C + c] * dot;
      if (dweight) dweight[c] += dout[n * C + c] * inp[n * C + c] * r;
    }
  }
}

// HF: out = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1); cos/sin (P, HS/2)
export function ropeForward(out: F32, inp: F32, cos: F32, sin: F32, positions: I32, T: number, NH: number, HS: number): void {
  const h2 = HS / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < NH; h++) {
      const base = (t * NH + h) * HS;
      for (let i = 0; i < h2; i++) {
        const c = cos[positions[t] * h2 + i], s = sin[positions[t] * h2 + i];
        const x1 = inp[base + i], x2 = inp[base + i + h2];
        out[base + i] = x1 * c - x2 * s;
        out[base + i + h2] = x2 * c + x1 * s;
      }
    }
  }
}

// the transpose of the rotation: dx1 += c g1 + s g2 ; dx2 += c g2 - s g1
export function ropeBackward(dinp: F32, dout: F32, cos: F32, sin: F32, positions: I32, T: number, NH: number, HS: number): void {
  const h2 = HS / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < NH; h++) {
      const base = (t * NH + h) * HS;
      for (let i = 0; i < h2; i++) {
        const c = cos[positions[t] * h2 + i], s = sin[positions[t] * h2 + i];
        const g1 = dout[base + i], g2 = dout[base + i + h2];
        dinp[base + i] += g1 * c + g2 * s;
        dinp[base + i + h2] += g2 * c - g1 * s;
      }
    }
  }
}

// out <- silu(gate) * up
export function swigluForward(out: F32, gate: F32, up: F32, N: number): void {
  for (let i = 0; i < N; i++) {
    const sig = 1 / (1 + Math.exp(-gate[i]));
    out[i] = gate[i] * sig * up[i];
  }
}

// silu'(x) = sig(x) (1 + x (1 - sig(x)))
export function swigluBackward(dgate: F32, dup: F32, dout: F32, gate: F32, up: F32, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = gate[i];
    const sig = 1 / (1 + Math.exp(-x));
    dgate[i] += dout[i] * up[i] * sig * (1 + x * (1 - sig));
    dup[i] += dout[i] * x * sig;
  }
}
