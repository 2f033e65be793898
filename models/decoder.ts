// The causal LM shared by llama / qwen2 / qwen3 / qwen2_moe / qwen3_moe / deepseek_v3: embeddings -> L decoder
// layers (dense MLP or sparse MoE per layer) -> final norm -> lm_head + cross-entropy.
// MoE models add HF's load-balancing loss (router_aux_loss_coef * aux, when output_router_logits)
// to the objective: its gradient enters each router's backward (blocks/router.ts), its value is
// host-side in `routerStats` (the device loss buffer stays the plain next-token CE sum).
// Vision-language families (qwen2_vl, qwen2_5_vl) add a vision tower (vl/vision.ts) whose output
// rows replace the embeddings at the image-token positions (HF masked_scatter), and M-RoPE:
// per-token rotary tables from 3-D position ids (get_rope_index). Parameters and gradients are one flat f32 buffer per unit
// (layout.ts). Model code knows nothing of parallelism: FSDP & co. plug in through UnitHooks.
//
// Unit order. forward: 0 (embed), 1..L (layers), H = L+1 (head). backward: H, L..1, 0. A sparse
// layer's experts unit (layout.expertUnits[l]) runs nested inside its layer unit's hooks: before
// l+1, before X_l, compute, after X_l, after l+1 (forwardUnits / backwardUnits list it after l+1).
// The head's forward is fused with its loss gradient (linear + CE in chunks, no (T,V) logits):
// its lm_head gradient is written between beforeUnitForward(H) and afterUnitForward(H), into
// grads[H] (untied) or grads[0] (tied: the head also READS unit 0, see layout.units[H].reads).
// Vision units (after H) run first in forward and last in backward; a micro-batch without images
// runs them on a dummy image (VeOmni's dummy forward, zero gradients) so every rank's collectives
// stay in step.
import type { Kernels } from "../kernels/index.ts";
import { ropeInvFreq, sectionedCosSin, shiftLabels } from "../kernels/index.ts";
import type { MicroBatch } from "../data/batch.ts";
import type { DecoderConfig } from "./config.ts";
import type { ModelFamily } from "./registry.ts";
import { decoderLayout, expertsUnit, type ParamLayout } from "./layout.ts";
import { Arena, type BatchInputs, type Buf, type F32, type I32 } from "./blocks/arena.ts";
import { LayerKv, type AttentionCore, type Views } from "./blocks/attention.ts";
import type { ExpertCore } from "./blocks/moe.ts";
import { Embedding, LmHead } from "./blocks/embedding.ts";
import { Rope } from "./blocks/rope.ts";
import { DecoderLayer, type LayerSaved, type LayerScratch } from "./decoder_layer.ts";
import { RouterStats } from "./blocks/router.ts";
import { VisionTower } from "./vl/vision.ts";
import { packedRopeIndex, type Pos3 } from "./vl/positions.ts";

/** Called around each unit's compute; async allowed (all-gather params, reduce-scatter grads).
 *  Hooks may replace `model.params[u]` / `model.grads[u]` (same numel) before the unit runs.
 *  Plans stack: each adds its own set with addHooks; all run, in the order they were added. */
export interface UnitHooks {
  beforeUnitForward?(u: number): void | Promise<void>;
  afterUnitForward?(u: number): void | Promise<void>;
  beforeUnitBackward?(u: number): void | Promise<void>;
  afterUnitBackward?(u: number): void | Promise<void>;
}

export interface DecoderOptions {
  /** Capacity in tokens of one packed micro-batch row (micro_batch_size * max_seq_len). */
  maxTokens: number;
  /** train.enable_gradient_checkpointing: keep only each layer's input, recompute in backward. */
  gradientCheckpointing: boolean;
  /** RoPE table length (positions < this); default max(maxTokens, max_position_embeddings). */
  maxPositions?: number;
  /** train.freeze_vit: the vision tower runs forward only (no vision gradients are computed). */
  freezeVision?: boolean;
  /** VeOmni's init_device "meta": no parameter buffers; a plan (FSDP: its shards, gathered per
   *  unit) or materialize() (models/load.ts) provides them from a WeightSource. */
  meta?: boolean;
}

/** Runs [start, length) of consecutive image tokens in a row (HF masked_scatter fills them in order). */
export function imageRuns(ids: Int32Array, imageTokenId: number): [number, number][] {
  const runs: [number, number][] = [];
  for (let t = 0; t < ids.length; t++) {
    if (ids[t] !== imageTokenId) continue;
    if (runs.length && runs[runs.length - 1][0] + runs[runs.length - 1][1] === t) runs[runs.length - 1][1]++;
    else runs.push([t, 1]);
  }
  return runs;
}

export class DecoderLM {
  readonly layout: ParamLayout;
  /** One flat f32 buffer per unit (layout.units[u].numel); empty until provided when meta. */
  readonly params: F32[];
  /** Mirrors params; allocated by allocGrads() (not needed for inference). */
  grads: F32[] | null = null;
  /** Every plan's unit hooks, run in the order added (see addHooks). */
  private readonly hookSets: UnitHooks[] = [];
  /** Bytes of activation buffers (saved + scratch) at capacity. */
  readonly activationBytes: number;
  /** MoE models: aux loss and expert load of the step (reset by the trainer); null when dense. */
  readonly routerStats: RouterStats | null;

  private rope: Rope;
  private emb: Embedding;
  private layer: DecoderLayer;
  private head: LmHead;
  private resid: Buf[]; // (L+1) x (Tmax,C): input of layer l, resid[L] = final hidden
  private saved: LayerSaved[]; // L sets, or 1 with checkpointing
  private scratch: LayerScratch;
  private dres: Buf;
  private inputs: { ids: I32; positions: I32; cuSeqlens: I32; targets: I32 };
  private hostTargets: Int32Array;
  private pending: BatchInputs | null = null;
  private viewCache = new WeakMap<F32, Views>();
  /** A sparse layer's views: its unit's and its experts unit's, keyed by both buffers. */
  private layerViewCache = new WeakMap<F32, WeakMap<F32, Views>>();
  /** The vision tower (VL families), its image-token runs of the current row, M-RoPE inv_freq. */
  readonly vision: VisionTower | null;
  private runs: [number, number][] = [];
  private mropeInv: Float32Array | null;
  /** M-RoPE at inference: max prompt position + 1 - prompt length (HF rope_deltas). */
  private ropeDelta = 0;
  /** Every plan's hooks as one set, for the vision tower's units. */
  private readonly allHooks: UnitHooks = {
    beforeUnitForward: (u) => this.hook("beforeUnitForward", u),
    afterUnitForward: (u) => this.hook("afterUnitForward", u),
    beforeUnitBackward: (u) => this.hook("beforeUnitBackward", u),
    afterUnitBackward: (u) => this.hook("afterUnitBackward", u),
  };

  constructor(readonly k: Kernels, readonly config: DecoderConfig, readonly family: ModelFamily, readonly opts: DecoderOptions) {
    const c = config;
    const Tmax = opts.maxTokens;
    this.layout = decoderLayout(c);
    this.params = opts.meta ? [] : this.layout.units.map((u) => k.alloc([u.numel], "f32", { name: `${u.name}.params` }));
    // M-RoPE tables are per token (rows 0..T-1, rewritten per micro-batch); plain RoPE per position
    this.rope = new Rope(k, c.HS, c.ropeTheta, c.ropeScaling, c.mm ? Tmax : opts.maxPositions ?? Math.max(Tmax, c.maxPositions));
    this.mropeInv = c.mm ? ropeInvFreq({ dim: c.HS, theta: c.ropeTheta }) : null;
    const vu = new Set(this.layout.visionUnits);
    this.vision = c.vision ? new VisionTower(k, c.vision, this.layout.units.filter((u) => vu.has(u.index))) : null;
    this.emb = new Embedding(k, c);
    this.routerStats = c.moe ? new RouterStats(c.moe.E, c.moe.sparse.filter(Boolean).length, c.moe.auxLoss) : null;
    this.layer = new DecoderLayer(k, c, this.rope, this.routerStats);
    const a = new Arena(k, Tmax);
    this.head = new LmHead(k, c, a);
    this.resid = Array.from({ length: c.L + 1 }, (_, l) => a.buf(c.C, `resid.${l}`));
    const nSaved = opts.gradientCheckpointing ? 1 : c.L;
    const all = Array.from({ length: c.L }, (_, l) => l);
    this.saved = Array.from({ length: nSaved }, (_, l) => this.layer.allocSaved(a, `layers.${l}`, opts.gradientCheckpointing ? all : [l]));
    this.scratch = this.layer.allocScratch(a);
    this.dres = a.buf(c.C, "dres");
    this.activationBytes = a.bytes;
    this.inputs = {
      ids: k.alloc([Tmax], "i32", { shared: false, name: "input_ids" }),
      positions: k.alloc([Tmax], "i32", { shared: false, name: "position_ids" }),
      cuSeqlens: k.alloc([Tmax + 1], "i32", { shared: false, name: "cu_seqlens" }),
      targets: k.alloc([Tmax], "i32", { shared: false, name: "targets" }),
    };
    this.hostTargets = new Int32Array(Tmax);
  }

  get headUnit(): number {
    return this.layout.headUnit;
  }

  /** Units in forward order (their beforeUnitForward hooks): vision units (VL), embeddings, each
   *  layer followed by its experts unit (MoE sparse layers), head. */
  get forwardUnits(): number[] {
    const c = this.config;
    const x = this.layout.expertUnits;
    const layers = Array.from({ length: c.L }, (_, l) => (x[l] >= 0 ? [l + 1, x[l]] : [l + 1])).flat();
    return [...this.layout.visionUnits, 0, ...layers, this.headUnit];
  }

  /** Units whose gradients backward computes, in backward order (their beforeUnitBackward hooks):
   *  head, layers L..1 (each followed by its experts unit), embeddings, then (VL, unless
   *  train.freeze_vit) merger, vision blocks, patch_embed. */
  get backwardUnits(): number[] {
    const c = this.config;
    const x = this.layout.expertUnits;
    const layers = Array.from({ length: c.L }, (_, i) => c.L - 1 - i).flatMap((l) => (x[l] >= 0 ? [l + 1, x[l]] : [l + 1]));
    const order = [this.headUnit, ...layers, 0];
    if (this.vision && !this.opts.freezeVision) order.push(...[...this.layout.visionUnits].reverse());
    return order;
  }

  /**
   * Keep only routed experts [first, first + count) of every sparse layer: each experts unit's
   * layout becomes that range's parameters, re-based (HF names kept; the others leave byName). For
   * a plan that places the other experts on other ranks (expert parallelism), which also installs
   * the ExpertCore that sends them their tokens. Only on a meta model, before any buffer exists.
   */
  holdExperts(first: number, count: number): void {
    const c = this.config, m = c.moe;
    if (!m) throw new Error(`model ${c.modelType}: holdExperts on a model without experts`);
    if (!this.opts.meta || this.params.length || this.grads) throw new Error(`model ${c.modelType}: holdExperts needs a meta model without parameter or gradient buffers`);
    if (first < 0 || count < 1 || first + count > m.E) throw new Error(`model ${c.modelType}: experts [${first}, ${first + count}) outside the ${m.E} experts`);
    const L = this.layout;
    for (const x of L.expertUnits) {
      if (x < 0) continue;
      const old = L.units[x];
      for (const p of old.params) L.byName.delete(p.name);
      const u = expertsUnit(x, old.experts!.layer, c.C, m, first, count);
      u.all = old.all ?? old.params;
      for (const p of u.params) L.byName.set(p.name, p);
      L.units[x] = u;
    }
  }

  /** Install a plan's expert computation at every sparse layer (default: all experts here). */
  setExpertCore(core: ExpertCore): void {
    this.layer.setExpertCore(core);
  }

  /** Units the optimizer updates: all but a frozen vision tower's. */
  get trainableUnits(): number[] {
    const frozen = new Set(this.opts.freezeVision ? this.layout.visionUnits : []);
    return this.layout.units.map((u) => u.index).filter((u) => !frozen.has(u));
  }

  /** Add one plan's hooks beside those already there (FSDP, a scheduler yield, ...); never replaces. */
  addHooks(h: UnitHooks): void {
    this.hookSets.push(h);
  }

  /** Runs hook `name` of every set for unit u, in order, awaiting each (collectives start inside). */
  private async hook(name: keyof UnitHooks, u: number): Promise<void> {
    for (const h of this.hookSets) await h[name]?.(u);
  }

  allocGrads(): F32[] {
    if (!this.grads) this.grads = this.layout.units.map((u) => this.k.alloc([u.numel], "f32", { name: `${u.name}.grads` }));
    return this.grads;
  }

  zeroGrads(): void {
    for (const g of this.allocGrads()) this.k.zero(g);
  }

  /** View of one parameter (by HF name) in its unit's current flat buffer. */
  param(name: string): F32 {
    return this.viewOf(this.params, name);
  }

  grad(name: string): F32 {
    return this.viewOf(this.allocGrads(), name);
  }

  private viewOf(flats: F32[], name: string): F32 {
    const p = this.layout.byName.get(name);
    if (!p) throw new Error(`model ${this.config.modelType}: no parameter "${name}"`);
    if (!flats[p.unit]) throw new Error(`model ${this.config.modelType}: "${name}" has no buffer (a meta model: a plan or materialize() provides it)`);
    return this.k.view(flats[p.unit], p.offset, p.shape);
  }

  /** Views of a unit's flat buffer by short name ("self_attn.q_proj.weight"), cached per buffer. */
  private views(flat: F32, u: number): Views {
    if (!flat) throw new Error(`model ${this.config.modelType}: unit ${this.layout.units[u].name} has no parameters (a meta model: a plan or materialize() provides them)`);
    let v = this.viewCache.get(flat);
    if (!v) {
      v = new Map();
      const ex = this.layout.units[u].experts;
      const prefix = ex ? `model.layers.${ex.layer}.` : u >= 1 && u <= this.config.L ? `model.layers.${u - 1}.` : "";
      for (const p of this.layout.units[u].params) v.set(p.name.slice(prefix.length), this.k.view(flat, p.offset, p.shape));
      // gate_proj and up_proj are adjacent (layout.ts): one (2I,C) view for the fused MLP GEMMs
      for (const mlp of ["mlp.", "mlp.shared_expert.", "mlp.shared_experts."]) {
        const gate = this.layout.byName.get(`${prefix}${mlp}gate_proj.weight`);
        const up = this.layout.byName.get(`${prefix}${mlp}up_proj.weight`);
        if (gate && up && gate.unit === u && up.unit === u && up.offset === gate.offset + gate.numel) v.set(`${mlp}gate_up_proj.weight`, this.k.view(flat, gate.offset, [2 * gate.numel]));
      }
      // MoE experts unit: every [gate; up] is one (n,2IM,C) block and every down one (n,C,IM) block (layout.ts)
      if (ex) {
        const ps = this.layout.units[u].params, n = ex.count;
        v.set("mlp.experts.gate_up_proj", this.k.view(flat, 0, [2 * n * ps[0].numel]));
        v.set("mlp.experts.down_proj", this.k.view(flat, ps[2 * n].offset, [n * ps[2 * n].numel]));
      }
      this.viewCache.set(flat, v);
    }
    return v;
  }

  /** Layer l's weights: its unit's views, plus its experts unit's on a sparse layer. */
  private layerViews(flats: F32[], l: number): Views {
    const v = this.views(flats[l + 1], l + 1);
    const x = this.layout.expertUnits[l];
    if (x < 0) return v;
    let byX = this.layerViewCache.get(flats[l + 1]);
    if (!byX) this.layerViewCache.set(flats[l + 1], (byX = new WeakMap()));
    let m = byX.get(flats[x]);
    if (!m) byX.set(flats[x], (m = new Map([...v, ...this.views(flats[x], x)])));
    return m;
  }

  /** Runs layer l's hooks (and its experts unit's, nested inside) around `body`. */
  private async aroundLayer(l: number, dir: "Forward" | "Backward", body: () => Promise<void>): Promise<void> {
    const x = this.layout.expertUnits[l];
    await this.hook(`beforeUnit${dir}`, l + 1);
    if (x >= 0) await this.hook(`beforeUnit${dir}`, x);
    await body();
    if (x >= 0) await this.hook(`afterUnit${dir}`, x);
    await this.hook(`afterUnit${dir}`, l + 1);
  }

  private headWeights(flats: F32[]): { normW: F32; weight: F32 } {
    const H = this.headUnit;
    const hv = this.views(flats[H], H);
    const weight = this.config.tied ? this.views(flats[0], 0).get("model.embed_tokens.weight")! : hv.get("lm_head.weight")!;
    return { normW: hv.get("model.norm.weight")!, weight };
  }

  /** Upload one packed row; checks the contract of data/batch.ts at this edge. M-RoPE models take
   *  3-D positions (`pos3`, else get_rope_index per sample of the row) and use positions 0..T-1.
   *  A sequence-parallel slice (mb.seqParallel) brings its labels already shifted and the whole
   *  row's cu_seqlens. */
  setBatch(mb: MicroBatch, pos3?: Pos3): BatchInputs {
    const T = mb.inputIds.length;
    const S = mb.cuSeqlens.length - 1;
    const rowT = mb.seqParallel?.fullLength ?? T; // the row attention runs over
    const where = `model ${this.config.modelType}: micro-batch`;
    if (T < 1 || T > this.opts.maxTokens) throw new Error(`${where} has ${T} tokens; capacity is 1..${this.opts.maxTokens} (micro_batch_size * max_seq_len${mb.seqParallel ? " / ulysses_parallel_size" : ""})`);
    if (mb.labels.length !== T || mb.positionIds.length !== T) throw new Error(`${where}: input_ids (${T}), labels (${mb.labels.length}), position_ids (${mb.positionIds.length}) differ in length`);
    if (S < 1 || mb.cuSeqlens[0] !== 0 || mb.cuSeqlens[S] !== rowT) throw new Error(`${where}: cu_seqlens must run from 0 to ${rowT}, got [${mb.cuSeqlens.join(",")}]`);
    const { k } = this;
    const inp = this.inputs;
    if (S + 1 > inp.cuSeqlens.numel) { // a sequence-parallel row: boundaries of the whole (longer) row
      k.free(inp.cuSeqlens);
      inp.cuSeqlens = k.alloc([S + 1], "i32", { shared: false, name: "cu_seqlens" });
    }
    const v = <D extends "i32">(t: I32, n: number) => (n === t.numel ? t : k.view(t, 0, [n])) as I32;
    const b: BatchInputs = { T, S, ids: v(inp.ids, T), positions: v(inp.positions, T), cuSeqlens: v(inp.cuSeqlens, S + 1), targets: v(inp.targets, T) };
    const tg = this.hostTargets.subarray(0, T);
    if (mb.seqParallel) tg.set(mb.labels); // shifted by the collator (parallel/ulysses_data.ts): never again here
    else shiftLabels(tg, mb.labels);
    k.upload(b.ids, mb.inputIds);
    if (this.mropeInv) {
      const c = this.config;
      let p3 = pos3;
      try {
        p3 ??= packedRopeIndex(mb.inputIds, mb.cuSeqlens, mb.imageGridThw ?? null, c.vision!, c.mm!);
      } catch (e) {
        throw new Error(`${where}: ${(e as Error).message}`);
      }
      const tab = sectionedCosSin(this.mropeInv, [p3.t, p3.h, p3.w], c.mm!.mropeSection);
      this.rope.setRows(tab.cos, tab.sin);
      k.upload(b.positions, Int32Array.from({ length: T }, (_, i) => i));
    } else {
      k.upload(b.positions, mb.positionIds);
    }
    k.upload(b.cuSeqlens, mb.cuSeqlens);
    k.upload(b.targets, tg);
    return b;
  }

  /** Install a plan's core attention at the site the model's plan declares (family.plan.ulyssesAround). */
  setAttentionCore(core: AttentionCore): void {
    if (!this.layer.attn) throw new Error(`model ${this.config.modelType}: its attention (MLA) has no core attention site for a sequence-parallel plan yet`);
    this.layer.attn.core = core;
  }

  /** Vision units on the row's images (or a dummy image when it has none, see the header), with
   *  their hooks. Returns the image features (n, C) for the image tokens, or null without images. */
  private async visionForward(mb: MicroBatch): Promise<F32 | null> {
    const v = this.vision;
    if (!v) return null;
    const c = this.config;
    const where = `model ${c.modelType}: micro-batch`;
    this.runs = imageRuns(mb.inputIds, c.mm!.imageTokenId);
    const nTok = this.runs.reduce((a, r) => a + r[1], 0);
    const ms = v.vc.mergeSize;
    const real = mb.pixelValues && mb.pixelValues.length > 0;
    if (!real && nTok > 0) throw new Error(`${where} has ${nTok} image tokens (image_token_id ${c.mm!.imageTokenId}) but no pixel_values`);
    const grids = real ? mb.imageGridThw ?? new Int32Array(0) : Int32Array.of(1, ms, ms);
    const pixels = real ? mb.pixelValues! : new Float32Array(ms * ms * v.vc.P);
    let nFeat = 0;
    for (let g = 0; g < grids.length; g += 3) nFeat += (grids[g] * grids[g + 1] * grids[g + 2]) / (ms * ms);
    if (real && nFeat !== nTok) throw new Error(`${where}: image features and image tokens do not match: tokens ${nTok}, features ${nFeat} (image_grid_thw [${grids.join(",")}])`);
    const out = await v.forward(this.params, this.allHooks, pixels, grids);
    return real ? out : null;
  }

  /** Embedding and decoder layers (units 0..L) with their hooks; leaves resid[L] (T,C) for the head.
   *  `img` (n, C): image features copied over the embeddings of the image-token runs. */
  private async trunkForward(b: BatchInputs, img: F32 | null): Promise<void> {
    const { k, config: c } = this;
    const T = b.T;
    await this.hook("beforeUnitForward", 0);
    this.emb.forward(this.resid[0].at(T), this.views(this.params[0], 0).get("model.embed_tokens.weight")!, b);
    await this.hook("afterUnitForward", 0);
    if (img) {
      let f = 0;
      for (const [t0, n] of this.runs) {
        k.copy(k.view(this.resid[0].full, t0 * c.C, [n * c.C]), k.view(img, f * c.C, [n * c.C]));
        f += n;
      }
    }
    for (let l = 0; l < c.L; l++) await this.aroundLayer(l, "Forward", () => this.layerForward(l, b));
  }

  /** Forward one micro-batch: loss (1) += sum of next-token CE over its valid tokens. With
   *  `grad`, the head's gradient is scaled by gradScale (1 / global valid tokens of the step)
   *  and backward() must follow before the next forward. MoE: the micro-batch's aux loss,
   *  weighted by its share of the step's valid tokens (mb.validTokens * gradScale, the weight its
   *  CE gets), goes to routerStats.auxSum, and into the gradient when output_router_logits. */
  async forward(mb: MicroBatch, loss: F32, gradScale: number, grad = true): Promise<void> {
    const { config: c } = this;
    const b = this.setBatch(mb);
    const T = b.T;
    const rs = grad ? this.routerStats : null; // evaluation forwards leave the step's stats alone
    rs?.beginMicroBatch(mb.seqParallel?.realTokens ?? T);
    await this.trunkForward(b, await this.visionForward(mb));
    if (rs) {
      const coef = c.moe!.outputRouterLogits ? c.moe!.routerAuxLossCoef : 0;
      await rs.endMicroBatch(mb.validTokens, gradScale, coef); // collective under Ulysses
    }
    const H = this.headUnit;
    await this.hook("beforeUnitForward", H);
    const { normW, weight } = this.headWeights(this.params);
    const dweight = grad ? this.headWeights(this.allocGrads()).weight : null;
    this.head.forwardLoss(loss, dweight, this.resid[c.L].at(T), normW, weight, b, gradScale);
    await this.hook("afterUnitForward", H);
    this.pending = grad ? b : null;
  }

  /** Full logits (T,V) of a packed row (evaluation; SYNC POINT: reads them to the host). */
  async logits(mb: MicroBatch): Promise<Float32Array> {
    const { k, config: c } = this;
    const b = this.setBatch(mb);
    const T = b.T;
    await this.trunkForward(b, await this.visionForward(mb));
    const H = this.headUnit;
    await this.hook("beforeUnitForward", H);
    const out = k.alloc([T, c.V], "f32", { shared: false, name: "logits" });
    const { normW, weight } = this.headWeights(this.params);
    this.head.logits(out, this.resid[c.L].at(T), normW, weight, T);
    await this.hook("afterUnitForward", H);
    const host = await k.read(out);
    k.free(out);
    this.pending = null;
    return host;
  }

  /** A KV cache for up to `capacity` tokens (prompt + generated). */
  newKvCache(capacity: number): LayerKv[] {
    const c = this.config;
    return Array.from({ length: c.L }, () => new LayerKv(capacity, this.layer.kvWidth));
  }

  /** Inference step with a KV cache: feeds `ids` at positions cache.length.. and returns their
   *  logits (T,V) (SYNC POINT). T is the prompt at prefill, then 1 per generated token. */
  async forwardCached(ids: Int32Array, cache: LayerKv[], images?: { pixelValues: Float32Array; imageGridThw: Int32Array }): Promise<Float32Array> {
    const { k, config: c } = this;
    const T = ids.length;
    const past = cache[0].length;
    const mb: MicroBatch = {
      inputIds: ids, labels: new Int32Array(T).fill(-100), positionIds: Int32Array.from({ length: T }, (_, i) => past + i),
      cuSeqlens: Int32Array.from([0, T]), validTokens: 0, pixelValues: images?.pixelValues ?? null, imageGridThw: images?.imageGridThw ?? null,
    };
    if (this.vision && !images && imageRuns(ids, c.mm!.imageTokenId).length) {
      throw new Error(`model ${c.modelType}: the prompt holds image tokens (image_token_id ${c.mm!.imageTokenId}) but no images were given`);
    }
    let pos3: Pos3 | undefined;
    if (this.mropeInv && past > 0) {
      // decode: text positions continue after the prompt's largest M-RoPE position (HF rope_deltas)
      const p = Int32Array.from({ length: T }, (_, i) => past + i + this.ropeDelta);
      pos3 = { t: p, h: p, w: p };
    } else if (this.mropeInv) {
      pos3 = packedRopeIndex(ids, mb.cuSeqlens, mb.imageGridThw ?? null, c.vision!, c.mm!);
      let mx = -1;
      for (const a of [pos3.t, pos3.h, pos3.w]) for (const x of a) mx = Math.max(mx, x);
      this.ropeDelta = mx + 1 - T;
    }
    const b = this.setBatch(mb, pos3);
    this.emb.forward(this.resid[0].at(T), this.views(this.params[0], 0).get("model.embed_tokens.weight")!, b);
    if (this.vision && images) {
      const img = await this.visionForward(mb);
      let f = 0;
      for (const [t0, n] of this.runs) {
        k.copy(k.view(this.resid[0].full, t0 * c.C, [n * c.C]), k.view(img!, f * c.C, [n * c.C]));
        f += n;
      }
    }
    for (let l = 0; l < c.L; l++) {
      const s = this.saved[this.opts.gradientCheckpointing ? 0 : l];
      await this.layer.forward(l, this.resid[l + 1].at(T), this.resid[l].at(T), this.layerViews(this.params, l), s, this.scratch, b, cache[l]);
    }
    const out = k.alloc([T, c.V], "f32", { shared: false, name: "logits" });
    const { normW, weight } = this.headWeights(this.params);
    this.head.logits(out, this.resid[c.L].at(T), normW, weight, T);
    const host = await k.read(out);
    k.free(out);
    return host;
  }

  private async layerForward(l: number, b: BatchInputs): Promise<void> {
    const s = this.saved[this.opts.gradientCheckpointing ? 0 : l];
    await this.layer.forward(l, this.resid[l + 1].at(b.T), this.resid[l].at(b.T), this.layerViews(this.params, l), s, this.scratch, b);
  }

  /** Backward of the last forward(grad = true): accumulates into grads (zeroed by the caller per step). */
  async backward(): Promise<void> {
    const b = this.pending;
    if (!b) throw new Error(`model ${this.config.modelType}: backward() without a preceding forward(grad = true)`);
    this.pending = null;
    const { k, config: c } = this;
    const grads = this.allocGrads();
    const T = b.T;
    const dres = this.dres.at(T); // (T,C) gradient w.r.t. the residual stream, layer by layer
    const H = this.headUnit;
    await this.hook("beforeUnitBackward", H);
    k.zero(dres);
    const hw = this.headWeights(this.params);
    this.head.backward(dres, this.views(grads[H], H).get("model.norm.weight")!, this.resid[c.L].at(T), hw.normW, T);
    await this.hook("afterUnitBackward", H);
    for (let l = c.L - 1; l >= 0; l--) {
      await this.aroundLayer(l, "Backward", async () => {
        if (this.opts.gradientCheckpointing) await this.layerForward(l, b); // recompute (routing not re-recorded)
        const s = this.saved[this.opts.gradientCheckpointing ? 0 : l];
        await this.layer.backward(l, dres, this.layerViews(grads, l), this.resid[l].at(T), this.layerViews(this.params, l), s, this.scratch, b);
      });
    }
    // image-token rows: their gradient goes to the vision tower, not to the embedding table
    const v = this.vision;
    const dImg = v && !this.opts.freezeVision ? v.dOut() : null;
    let f = 0;
    for (const [t0, n] of this.runs) {
      const rows = k.view(this.dres.full, t0 * c.C, [n * c.C]);
      if (dImg) k.copy(k.view(dImg, f * c.C, [n * c.C]), rows);
      k.zero(rows);
      f += n;
    }
    await this.hook("beforeUnitBackward", 0);
    this.emb.backward(this.views(grads[0], 0).get("model.embed_tokens.weight")!, dres, b);
    await this.hook("afterUnitBackward", 0);
    if (v && !this.opts.freezeVision) await v.backward(this.params, grads, this.allHooks);
  }
}
