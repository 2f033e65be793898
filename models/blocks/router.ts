// MoE routing on the host (HF Qwen2Moe/Qwen3MoeSparseMoeBlock and DeepseekV3TopkRouter) and its
// backward.
// The router logits (T,E) are read to the host once per MoE layer (a SYNC POINT the expert
// exchange needs anyway: group sizes drive one GEMM per expert, and expert parallelism sends
// per-expert token counts). Routing is O(T*E*K), small beside the experts' GEMMs.
//   softmax (Qwen): p = softmax(logits) in f32; (w, ids) = top-k of p (descending, ties to the
//     lower expert); w /= sum(w) when norm_topk_prob.
//   sigmoid_group (DeepSeek-V3): p = sigmoid(logits); choice c = p + e_score_correction_bias; each
//     of n_group groups scores the sum of its top-2 c; outside the topk_group best groups c = 0;
//     ids = top-k of c; w = p[ids] (/ (sum + 1e-20) when norm_topk_prob) * routed_scaling_factor.
// Rows: the T*K (token, route) pairs sorted by (expert, token) (a stable counting sort), so
// expert e's inputs are rows [off[e], off[e+1]) and the order is the same on every run.
// Shape letters: T tokens, E experts, K routes per token, R = T*K rows.

import type { MoeConfig } from "../config.ts";

export interface Routing {
  T: number;
  /** softmax probabilities (T,E), f32 as HF's softmax(dtype=float). */
  probs: Float32Array;
  /** chosen experts (T,K), highest probability first. */
  ids: Int32Array;
  /** routing weights (T,K). */
  weights: Float32Array;
  /** expert row offsets (E+1): expert e owns sorted rows [off[e], off[e+1]). */
  off: Int32Array;
  /** token of each sorted row (R). */
  rowToken: Int32Array;
  /** sorted row of route (t,k) (T,K). */
  rowOf: Int32Array;
}

/** k largest of v[0..n) (descending, ties to the lower index), skipping `skip` marks; into out. */
function topk(v: ArrayLike<number>, n: number, k: number, out: Int32Array | number[]): void {
  for (let j = 0; j < k; j++) {
    let best = -1;
    for (let e = 0; e < n; e++) {
      let taken = false;
      for (let i = 0; i < j; i++) if (out[i] === e) taken = true;
      if (!taken && (best < 0 || v[e] > v[best])) best = e;
    }
    out[j] = best;
  }
}

export class Router {
  readonly E: number;
  readonly K: number;
  private choice: Float32Array;
  constructor(private m: MoeConfig) {
    this.E = m.E;
    this.K = m.K;
    this.choice = new Float32Array(m.E);
  }

  /** Host arrays for up to Tmax tokens (viewed at T by route()). */
  alloc(Tmax: number): Routing {
    const { E, K } = this;
    return {
      T: 0, probs: new Float32Array(Tmax * E), ids: new Int32Array(Tmax * K), weights: new Float32Array(Tmax * K),
      off: new Int32Array(E + 1), rowToken: new Int32Array(Tmax * K), rowOf: new Int32Array(Tmax * K),
    };
  }

  /** Fill `r` from router logits (T,E); `bias` (E): DeepSeek's e_score_correction_bias. */
  route(r: Routing, logits: Float32Array, T: number, bias: Float32Array | null): void {
    const { E, K, m } = this;
    r.T = T;
    const count = new Int32Array(E);
    const f = Math.fround;
    for (let t = 0; t < T; t++) {
      const lg = logits.subarray(t * E, (t + 1) * E), p = r.probs.subarray(t * E, (t + 1) * E);
      const ids = r.ids.subarray(t * K, (t + 1) * K), w = r.weights.subarray(t * K, (t + 1) * K);
      if (m.router === "softmax") {
        let mx = -Infinity;
        for (let e = 0; e < E; e++) mx = Math.max(mx, lg[e]);
        let sum = 0;
        for (let e = 0; e < E; e++) sum += Math.exp(lg[e] - mx);
        for (let e = 0; e < E; e++) p[e] = Math.exp(lg[e] - mx) / sum;
        topk(p, E, K, ids);
      } else {
        const c = this.choice, G = m.nGroup, per = E / G;
        for (let e = 0; e < E; e++) {
          p[e] = 1 / (1 + Math.exp(-lg[e]));
          c[e] = f(p[e] + (bias ? bias[e] : 0));
        }
        const gs = new Float32Array(G), top2 = [0, 0], keep: number[] = new Array(m.topkGroup);
        for (let g = 0; g < G; g++) {
          topk(c.subarray(g * per, (g + 1) * per), per, Math.min(2, per), top2);
          gs[g] = per >= 2 ? f(c[g * per + top2[0]] + c[g * per + top2[1]]) : c[g * per];
        }
        topk(gs, G, m.topkGroup, keep);
        for (let g = 0; g < G; g++) if (!keep.includes(g)) c.fill(0, g * per, (g + 1) * per); // HF masked_fill(.., 0.0)
        topk(c, E, K, ids);
      }
      let chosen = 0;
      for (let k = 0; k < K; k++) {
        w[k] = p[ids[k]];
        chosen = f(chosen + w[k]);
        count[ids[k]]++;
      }
      if (m.normTopkProb) {
        const d = m.router === "softmax" ? chosen : f(chosen + 1e-20);
        for (let k = 0; k < K; k++) w[k] = w[k] / d;
      }
      if (m.routedScalingFactor !== 1) for (let k = 0; k < K; k++) w[k] = w[k] * m.routedScalingFactor;
    }
    // stable counting sort of (t,k) by expert: rows of expert e in token order
    r.off[0] = 0;
    for (let e = 0; e < E; e++) r.off[e + 1] = r.off[e] + count[e];
    const next = r.off.slice(0, E);
    for (let t = 0; t < T; t++) {
      for (let k = 0; k < K; k++) {
        const row = next[r.ids[t * K + k]]++;
        r.rowToken[row] = t;
        r.rowOf[t * K + k] = row;
      }
    }
  }

  /** dlogits (T,E) <- gradient of the routing weights (dweights (T,K)) through the top-k
   *  (renormalised) softmax, plus `auxGrad` (E) = dLoss/dp[t,e] of the load-balancing loss
   *  (the same for every token counted in the loss: the first `auxTokens`; the rest are Ulysses
   *  padding, outside the loss), or null. */
  backward(dlogits: Float32Array, dweights: Float32Array, r: Routing, auxGrad: Float64Array | null, auxTokens: number): void {
    const { E, K, m } = this;
    const dp = new Float64Array(E);
    const eps = m.router === "softmax" ? 0 : 1e-20;
    for (let t = 0; t < r.T; t++) {
      const p = r.probs.subarray(t * E, (t + 1) * E);
      if (auxGrad && t < auxTokens) dp.set(auxGrad);
      else dp.fill(0);
      const ids = r.ids.subarray(t * K, (t + 1) * K), dw = dweights.subarray(t * K, (t + 1) * K);
      const rsf = m.routedScalingFactor;
      if (m.normTopkProb) {
        // w_k = rsf p_k / D, D = sum_j p_j (+ eps): dp_k = rsf (dw_k - sum_j dw_j p_j / D) / D
        let D = eps, dot = 0;
        for (let k = 0; k < K; k++) D += p[ids[k]];
        for (let k = 0; k < K; k++) dot += dw[k] * (p[ids[k]] / D);
        for (let k = 0; k < K; k++) dp[ids[k]] += (rsf * (dw[k] - dot)) / D;
      } else {
        for (let k = 0; k < K; k++) dp[ids[k]] += rsf * dw[k];
      }
      if (m.router === "softmax") {
        // softmax backward: dlogit_e = p_e (dp_e - sum_j dp_j p_j)
        let s = 0;
        for (let e = 0; e < E; e++) s += dp[e] * p[e];
        for (let e = 0; e < E; e++) dlogits[t * E + e] = p[e] * (dp[e] - s);
      } else {
        // sigmoid backward (the bias only steers the choice: no gradient reaches it)
        for (let e = 0; e < E; e++) dlogits[t * E + e] = dp[e] * p[e] * (1 - p[e]);
      }
    }
  }
}

/** Sequence-parallel plans (Ulysses): sums a micro-batch's router statistics over the ranks that
 *  hold the other slices of the same packed row, so the aux loss is the whole row's. */
export interface RouterStatsReduce {
  /** Ranks sharing each row (the group size). */
  readonly size: number;
  /** v (n) <- sum over the group of every member's v (n), the same values on every member. */
  sum(v: Float64Array): Promise<void>;
}

/** Per micro-batch load-balancing loss (HF load_balancing_loss_func) over the sparse layers'
 *  routings, and per-step expert load for the metrics:
 *    aux = E * sum_e (count_e / N) * (sum of p[., e] / N),  N = sparse layers x tokens,
 *  count_e the routes to expert e over all those rows (HF's mean of the one-hot top-k summed
 *  over k). Its gradient with respect to each p[t,e] is E * count_e / N^2, the same for every
 *  row: `auxGrad` (scaled by the loss coefficient), used by every sparse layer's backward.
 *  Rows are padding-free (VeOmni rmpad: HF's attention_mask is None); the only padding is a
 *  Ulysses row's tail, which HF's attention_mask variant would mask: those tokens are left out of
 *  count, p sums, N and the expert load (they are the last T - realTokens rows of a slice).
 *  Under Ulysses the statistics are summed over the group before aux is formed (`reduce`), so a
 *  micro-batch's aux is one process's over the whole row. VeOmni instead adds each slice's own
 *  aux, divided by sp_size (veomni/utils/loss_utils.py mean_global_loss): the mean of per-slice
 *  losses, which depends on the group size; we keep one process's value (see docs/moe.md).
 *  Micro-batches and ranks: each micro-batch's aux enters the objective with the weight its CE
 *  mean gets, valid_mb / the step's global valid tokens, as VeOmni's mean_global_loss scales
 *  HF's outputs.loss (lm + coef * aux) of each micro-batch. */
export class RouterStats {
  /** Tokens routed to each expert, per sparse layer, summed over the step's micro-batches. */
  readonly load: Float64Array[];
  /** sum over micro-batches of weight_mb * aux_mb (weight = valid_mb / global valid tokens); under
   *  Ulysses each member adds 1/size of its row's term, so the sum over ranks counts it once. */
  auxSum = 0;
  /** dObjective/dp[t,e] for the current micro-batch (zero unless the aux term is in the objective). */
  readonly auxGrad: Float64Array;
  /** Record routings (training forward only; off for evaluation and recompute in backward). */
  recording = false;
  /** Set by a sequence-parallel plan; null for whole rows. */
  reduce: RouterStatsReduce | null = null;
  private count: Float64Array;
  private probSum: Float64Array;
  private rows = 0;
  /** Tokens of the current micro-batch in the loss (its first ones; the rest: Ulysses padding). */
  realTokens = 0;
  private packed: Float64Array;

  /** `aux`: the family has HF's load-balancing loss (Qwen MoE); without it auxSum stays 0. */
  constructor(readonly E: number, nSparse: number, readonly aux: boolean) {
    this.load = Array.from({ length: nSparse }, () => new Float64Array(E));
    this.auxGrad = new Float64Array(E);
    this.count = new Float64Array(E);
    this.probSum = new Float64Array(E);
    this.packed = new Float64Array(2 * E + 2);
  }

  resetStep(): void {
    for (const l of this.load) l.fill(0);
    this.auxSum = 0;
  }

  /** Start a micro-batch whose first `realTokens` tokens are real (the rest: Ulysses padding). */
  beginMicroBatch(realTokens: number): void {
    this.count.fill(0);
    this.probSum.fill(0);
    this.rows = 0;
    this.realTokens = realTokens;
    this.auxGrad.fill(0);
    this.recording = true;
  }

  /** One sparse layer's routing (index among the sparse layers). */
  add(sparseIndex: number, r: Routing, K: number): void {
    if (!this.recording) return;
    const { E } = this;
    const T = Math.min(r.T, this.realTokens);
    const load = this.load[sparseIndex];
    for (let i = 0; i < T * K; i++) {
      this.count[r.ids[i]]++;
      load[r.ids[i]]++;
    }
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) this.probSum[e] += r.probs[t * E + e];
    this.rows += T;
  }

  /** Close the micro-batch (`valid` its valid tokens, `gradScale` 1 / the step's global valid
   *  tokens): aux_mb into auxSum with weight valid * gradScale (the row's valid tokens under
   *  Ulysses); auxGrad = coef * weight * daux/dp when the aux term is in the objective (coef > 0
   *  and gradients wanted). Collective under Ulysses (every member calls it per micro-batch).
   *  Returns aux_mb. */
  async endMicroBatch(valid: number, gradScale: number, gradCoef: number): Promise<number> {
    this.recording = false;
    if (!this.aux) return 0;
    const { E } = this;
    let N = this.rows;
    if (this.reduce) {
      const v = this.packed;
      v.set(this.count, 0);
      v.set(this.probSum, E);
      v[2 * E] = N;
      v[2 * E + 1] = valid;
      await this.reduce.sum(v); // collective: the row's other slices
      this.count.set(v.subarray(0, E));
      this.probSum.set(v.subarray(E, 2 * E));
      N = v[2 * E];
      valid = v[2 * E + 1];
    }
    if (N === 0) return 0;
    const weight = valid * gradScale;
    let aux = 0;
    for (let e = 0; e < E; e++) aux += (this.count[e] / N) * (this.probSum[e] / N);
    aux *= E;
    this.auxSum += (weight * aux) / (this.reduce?.size ?? 1);
    for (let e = 0; e < E; e++) this.auxGrad[e] = gradCoef * weight * E * this.count[e] / (N * N);
    return aux;
  }
}
