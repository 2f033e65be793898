// Reference varlen attention (causal or full within each sample) with GQA: one query at a time,
// the full softmax row in f64.
// q (T,NH,HS), k/v (T,NKV,HS), out (T,NH,HS), lse (T,NH); cu (S+1) sample boundaries.

type F32 = Float32Array;
type I32 = Int32Array;

/** Keys [j0, j1] that token t sees: its sample's start to t (causal) or to the sample's end
 *  (cu validated: cu[0]=0, non-decreasing, cu[S]=T; empty samples allowed). */
function keyRange(cu: I32, t: number, causal: boolean): [number, number] {
  let s = 0;
  while (cu[s + 1] <= t) s++;
  return [cu[s], causal ? t : cu[s + 1] - 1];
}

/** Scaled scores of query (t,h) against keys j in [j0, j1] of kv head g, as f64. */
function scores(q: F32, k: F32, t: number, h: number, g: number, j0: number, j1: number, NH: number, NKV: number, HS: number, scale: number): Float64Array {
  const sc = new Float64Array(j1 - j0 + 1);
  for (let j = j0; j <= j1; j++) {
    let d = 0;
    for (let i = 0; i < HS; i++) d += q[(t * NH + h) * HS + i] * k[(j * NKV + g) * HS + i];
    sc[j - j0] = d * scale;
  }
  return sc;
}

export function attentionForward(out: F32, lse: F32, q: F32, k: F32, v: F32, cu: I32, T: number, NH: number, NKV: number, HS: number,
  scale: number, causal: boolean): void {
  const G = NH / NKV;
  for (let t = 0; t < T; t++) {
    const [j0, j1] = keyRange(cu, t, causal);
    for (let h = 0; h < NH; h++) {
      const g = Math.floor(h / G);
      const sc = scores(q, k, t, h, g, j0, j1, NH, NKV, HS, scale);
      let m = -Infinity;
      for (const s of sc) m = Math.max(m, s);
      let z = 0;
      for (const s of sc) z += Math.exp(s - m);
      const l = m + Math.log(z);
      lse[t * NH + h] = l;
      for (let i = 0; i < HS; i++) {
        let acc = 0;
        for (let j = j0; j <= j1; j++) acc += Math.exp(sc[j - j0] - l) * v[(j * NKV + g) * HS + i];
        out[(t * NH + h) * HS + i] = acc;
      }
    }
  }
}

// p_j = softmax; dp_j = dout.v_j; ds_j = p_j (dp_j - sum_i p_i dp_i); dq += scale ds k; dk_j += scale ds_j q; dv_j += p_j dout
export function attentionBackward(dq: F32, dk: F32, dv: F32, dout: F32, q: F32, k: F32, v: F32, _out: F32, _lse: F32, cu: I32,
  T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void {
  const G = NH / NKV;
  for (let t = 0; t < T; t++) {
    const [j0, j1] = keyRange(cu, t, causal);
    for (let h = 0; h < NH; h++) {
      const g = Math.floor(h / G);
      const sc = scores(q, k, t, h, g, j0, j1, NH, NKV, HS, scale);
      let m = -Infinity;
      for (const s of sc) m = Math.max(m, s);
      let z = 0;
      for (const s of sc) z += Math.exp(s - m);
      const p = sc.map((s) => Math.exp(s - m) / z);
      const dp = new Float64Array(p.length);
      let D = 0;
      for (let j = j0; j <= j1; j++) {
        let d = 0;
        for (let i = 0; i < HS; i++) d += dout[(t * NH + h) * HS + i] * v[(j * NKV + g) * HS + i];
        dp[j - j0] = d;
        D += p[j - j0] * d;
      }
      for (let j = j0; j <= j1; j++) {
        const ds = p[j - j0] * (dp[j - j0] - D);
        for (let i = 0; i < HS; i++) {
          dq[(t * NH + h) * HS + i] += scale * ds * k[(j * NKV + g) * HS + i];
          dk[(j * NKV + g) * HS + i] += scale * ds * q[(t * NH + h) * HS + i];
          dv[(j * NKV + g) * HS + i] += p[j - j0] * dout[(t * NH + h) * HS + i];
        }
      }
    }
  }
}
