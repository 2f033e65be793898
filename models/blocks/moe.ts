// Sparse mixture-of-experts block (HF Qwen3MoeSparseMoeBlock / Qwen2MoeSparseMoeBlock /
// DeepseekV3MoE), explicit autograd. Forward, for xn (T,C):
//   logits (T,E) = xn Wg^T                      router (mlp.gate), read to the host: SYNC POINT
//   routing on the host (router.ts): probs, top-k ids/weights, rows sorted by expert
//   xs (R,C) = xn[rowToken]                     gather (embeddingForward over xn as the table)
//   ys (R,C) = grouped SwiGLU experts over xs   one GEMM group per expert (grouped_gemm.ts)
//   qwen2_moe: ysh (T,C) = shared_expert(xn), gate s (T) = sigmoid(xn Wsg^T), riding as route K
//   deepseek_v3: ysh (T,C) = shared_experts(xn) with weight 1 as route K
//   out (T,C) = sum_k w[t,k] ys[rowOf[t,k]] (+ s[t] ysh[t])      moeCombine, k order fixed
// Backward mirrors it; the routing weights' gradient (and the shared gate's) comes back to the
// host (SYNC POINT), through the top-k softmax (plus the load-balancing loss term) into dlogits.
// The routed experts' computation (xs -> ys and back) is an ExpertCore: by default every expert on
// this rank (the grouped GEMM); expert parallelism installs one that sends each expert's rows to
// the rank holding it (parallel/expert.ts), so the block never branches on a plan.
// Shape letters: E experts, K routes per token, IM expert width, R = T*K rows, K1 = K (+1 with a
// shared expert), RT = R (+T with a shared expert) rows of `rows`.
import type { Kernels } from "../../kernels/index.ts";
import { groupedSwigluBackward, groupedSwigluForward } from "../../kernels/index.ts";
import type { DecoderConfig, MoeConfig } from "../config.ts";
import type { Arena, BatchInputs, Buf, F32, IBuf } from "./arena.ts";
import type { Views } from "./attention.ts";
import { Mlp, type MlpSaved, type MlpScratch } from "./mlp.ts";
import { Router, type Routing, type RouterStats } from "./router.ts";

export interface MoeSaved {
  logits: Buf; xs: Buf; gu: Buf; rows: Buf; idx: IBuf; weights: Buf; rowToken: IBuf;
  routing: Routing;
  /** host staging of idx / weights (Tmax*K1), filled at each forward. */
  hostIdx: Int32Array; hostWeights: Float32Array;
  /** qwen2_moe: the shared expert's saved activations and its gate's logit (T). */
  shared: MlpSaved | null; sgLogit: Buf | null;
}

export interface MoeScratch {
  h: Buf; dh: Buf; dgu: Buf; drows: Buf; dxs: Buf; dweights: Buf; dlogits: Buf;
  shared: MlpScratch | null; dsg: Buf | null;
  /** host staging (capacity Tmax): routing-weight grads (T,K), router logit grads (T,E), gate grads (T). */
  hostDw: Float32Array; hostDlogits: Float32Array; hostDsg: Float32Array;
}

/** The routed experts over rows sorted by expert (off (E+1) on the host: expert e owns rows
 *  [off[e], off[e+1]) of R = off[E]); wgu / wd are the experts unit's (n,2IM,C) / (n,C,IM) blocks
 *  of the experts this rank holds (all E by default). `s` is the layer's saved set. */
export interface ExpertCore {
  /** ys (R,C) <- experts(xs (R,C)). */
  forward(ys: F32, xs: F32, off: Int32Array, wgu: F32, wd: F32, s: MoeSaved, sc: MoeScratch): Promise<void>;
  /** dxs (R,C) +=, dwgu +=, dwd += from dys (R,C), the saved set of the matching forward. */
  backward(dxs: F32, dwgu: F32, dwd: F32, dys: F32, xs: F32, off: Int32Array, wgu: F32, wd: F32, s: MoeSaved, sc: MoeScratch): Promise<void>;
}

export class MoeBlock {
  /** Where the routed experts run (see ExpertCore); default: all of them here. */
  core: ExpertCore;
  private m: MoeConfig;
  private router: Router;
  private shared: Mlp | null;
  private K1: number;

  constructor(private k: Kernels, private c: DecoderConfig, private stats: RouterStats) {
    this.m = c.moe!;
    this.router = new Router(this.m);
    this.shared = this.m.ISH > 0 ? new Mlp(k, c.C, this.m.ISH, this.m.sharedPrefix) : null;
    this.K1 = this.m.K + (this.shared ? 1 : 0);
    const { E, IM } = this.m, C = c.C;
    this.core = {
      forward: async (ys, xs, off, wgu, wd, s, sc) =>
        groupedSwigluForward(k, ys, s.gu.at(off[E] / this.m.K), xs, wgu, wd, off, E, C, IM, sc.h.at(off[E] / this.m.K)),
      backward: async (dxs, dwgu, dwd, dys, xs, off, wgu, wd, s, sc) => {
        const T = off[E] / this.m.K;
        groupedSwigluBackward(k, dxs, dwgu, dwd, dys, xs, s.gu.at(T), wgu, wd, off, E, C, IM, { h: sc.h.at(T), dh: sc.dh.at(T), dgu: sc.dgu.at(T) });
      },
    };
  }

  allocSaved(a: Arena, name: string): MoeSaved {
    const { E, K, IM } = this.m, C = this.c.C, K1 = this.K1;
    return {
      logits: a.buf(E, `${name}.router_logits`), xs: a.buf(K * C, `${name}.xs`), gu: a.buf(K * 2 * IM, `${name}.experts_gu_t`),
      rows: a.buf(K1 * C, `${name}.rows`), idx: a.ibuf(K1, `${name}.route_rows`), weights: a.buf(K1, `${name}.route_weights`),
      rowToken: a.ibuf(K, `${name}.row_token`), routing: this.router.alloc(a.Tmax),
      hostIdx: new Int32Array(a.Tmax * K1), hostWeights: new Float32Array(a.Tmax * K1),
      shared: this.shared ? this.shared.allocSaved(a, `${name}.shared_expert`) : null,
      sgLogit: this.m.sharedGate && this.shared ? a.buf(1, `${name}.shared_gate`) : null,
    };
  }

  allocScratch(a: Arena): MoeScratch {
    const { E, K, IM } = this.m, C = this.c.C, K1 = this.K1;
    return {
      h: a.buf(K * IM, "moe.h_t"), dh: a.buf(K * IM, "moe.dh_t"), dgu: a.buf(K * 2 * IM, "moe.dgu_t"),
      drows: a.buf(K1 * C, "moe.drows"), dxs: a.buf(K * C, "moe.dxs"), dweights: a.buf(K1, "moe.dweights"),
      dlogits: a.buf(E, "moe.dlogits"), shared: this.shared ? this.shared.allocScratch(a, "moe.shared_expert") : null,
      dsg: this.m.sharedGate && this.shared ? a.buf(1, "moe.dshared_gate") : null,
      hostDw: new Float32Array(a.Tmax * K), hostDlogits: new Float32Array(a.Tmax * E), hostDsg: new Float32Array(a.Tmax),
    };
  }

  private experts(w: Views): { wgu: F32; wd: F32 } {
    const wgu = w.get("mlp.experts.gate_up_proj"), wd = w.get("mlp.experts.down_proj");
    if (!wgu || !wd) throw new Error("moe: the experts' gate/up and down projections must be contiguous blocks of the unit (layout.ts)");
    return { wgu, wd };
  }

  /** out (T,C) <- xn (T,C); `sparseIndex` numbers this layer among the sparse ones (stats). */
  async forward(out: F32, xn: F32, w: Views, s: MoeSaved, sc: MoeScratch, b: BatchInputs, sparseIndex: number): Promise<void> {
    const { k, m } = this;
    const { C } = this.c;
    const { T } = b;
    const R = T * m.K, K1 = this.K1, RT = R + (this.shared ? T : 0);
    const logits = s.logits.at(T);
    k.linearForward(logits, xn, w.get("mlp.gate.weight")!, null, T, C, m.E);
    const r = s.routing;
    const bias = m.router === "sigmoid_group" ? await k.read(w.get("mlp.gate.e_score_correction_bias")!) : null;
    this.router.route(r, await k.read(logits), T, bias); // SYNC POINT: routing on the host
    this.stats.add(sparseIndex, r, m.K);
    const idx = s.hostIdx.subarray(0, T * K1), wts = s.hostWeights.subarray(0, T * K1);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < m.K; j++) {
        idx[t * K1 + j] = r.rowOf[t * m.K + j];
        wts[t * K1 + j] = r.weights[t * m.K + j];
      }
    }
    const rows = s.rows.at(T);
    if (this.shared) {
      let sgHost: Float32Array | null = null;
      if (m.sharedGate) {
        const sg = s.sgLogit!.at(T);
        k.linearForward(sg, xn, w.get("mlp.shared_expert_gate.weight")!, null, T, C, 1);
        sgHost = await k.read(sg); // SYNC POINT (same as the router's): the gate becomes route K's weight
      }
      for (let t = 0; t < T; t++) {
        idx[t * K1 + m.K] = R + t;
        wts[t * K1 + m.K] = sgHost ? 1 / (1 + Math.exp(-sgHost[t])) : 1;
      }
      this.shared.forward(k.view(rows, R * C, [T * C]), xn, w, s.shared!, b);
    }
    k.upload(s.idx.at(T), idx);
    k.upload(s.weights.at(T), wts);
    const rowToken = s.rowToken.at(T);
    k.upload(rowToken, r.rowToken.subarray(0, R));
    const xs = s.xs.at(T);
    k.embeddingForward(xs, rowToken, xn, R, C, T); // xs (R,C) = xn[rowToken]
    const { wgu, wd } = this.experts(w);
    await this.core.forward(k.view(rows, 0, [R * C]), xs, r.off, wgu, wd, s, sc); // (expert parallel: all-to-alls inside)
    k.moeCombine(out, rows, s.idx.at(T), s.weights.at(T), T, K1, C, RT);
  }

  // dxn (T,C) += ; g += ; from dout (T,C)
  async backward(dxn: F32, g: Views, dout: F32, xn: F32, w: Views, s: MoeSaved, sc: MoeScratch, b: BatchInputs): Promise<void> {
    const { k, m } = this;
    const { C } = this.c;
    const { T } = b;
    const R = T * m.K, K1 = this.K1, RT = R + (this.shared ? T : 0);
    const drows = sc.drows.at(T), dweights = sc.dweights.at(T), dxs = sc.dxs.at(T);
    k.zero(drows);
    k.zero(dweights);
    k.moeCombineBackward(drows, dweights, dout, s.rows.at(T), s.idx.at(T), s.weights.at(T), T, K1, C, RT);
    k.zero(dxs);
    const ew = this.experts(w), eg = this.experts(g);
    await this.core.backward(dxs, eg.wgu, eg.wd, k.view(drows, 0, [R * C]), s.xs.at(T), s.routing.off, ew.wgu, ew.wd, s, sc);
    k.embeddingBackward(dxn, dxs, s.rowToken.at(T), R, C, T); // dxn[rowToken[r]] += dxs[r], rows in order
    if (this.shared) this.shared.backward(dxn, g, k.view(drows, R * C, [T * C]), xn, w, s.shared!, sc.shared!, b);
    const dwHost = await k.read(dweights); // SYNC POINT: routing-weight gradients back to the host
    const dw = sc.hostDw.subarray(0, R);
    for (let t = 0; t < T; t++) for (let j = 0; j < m.K; j++) dw[t * m.K + j] = dwHost[t * K1 + j];
    const dl = sc.hostDlogits.subarray(0, T * m.E);
    this.router.backward(dl, dw, s.routing, this.stats.auxGrad, this.stats.realTokens);
    const dlogits = sc.dlogits.at(T);
    k.upload(dlogits, dl);
    k.linearBackward(dxn, g.get("mlp.gate.weight")!, null, dlogits, xn, w.get("mlp.gate.weight")!, T, C, m.E);
    if (this.shared && m.sharedGate) {
      // d(gate logit) = d(sigmoid) * sig (1 - sig); the sigmoid is route K's weight (host copy)
      const wts = s.hostWeights;
      const dsg = sc.hostDsg.subarray(0, T);
      for (let t = 0; t < T; t++) {
        const sig = wts[t * K1 + m.K];
        dsg[t] = dwHost[t * K1 + m.K] * sig * (1 - sig);
      }
      const dsgT = sc.dsg!.at(T);
      k.upload(dsgT, dsg);
      k.linearBackward(dxn, g.get("mlp.shared_expert_gate.weight")!, null, dsgT, xn, w.get("mlp.shared_expert_gate.weight")!, T, C, 1);
    }
  }
}
