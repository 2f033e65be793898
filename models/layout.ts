// Parameter layout, llm.c style: every parameter is a named view into ONE flat f32 buffer per
// FSDP unit. Unit 0 = embeddings, units 1..L = decoder layers, unit L+1 = final norm (+ lm_head
// when untied); vision-language models append the vision tower's units after the head
// (L+2 = patch_embed, then one per vision block, then the merger; see vl/layout.ts); MoE models
// append one unit per sparse layer holding that layer's routed experts ("layers.3.experts"), so
// that an expert-parallel plan can place and shard them apart from the replicated parameters
// (docs/plans.md section 4). Gradients and optimizer state mirror the same layout, so FSDP shards,
// gathers and reduce-scatters whole units, and the optimizer runs over flat ranges.
import type { DecoderConfig, MlaConfig, MoeConfig } from "./config.ts";
import { visionUnits } from "./vl/layout.ts";

export type InitKind = "normal" | "zeros" | "ones";

export interface ParamEntry {
  /** Hugging Face name, e.g. "model.layers.3.self_attn.q_proj.weight". */
  name: string;
  unit: number;
  /** Element offset inside the unit's flat buffer. */
  offset: number;
  shape: number[];
  numel: number;
  /** Weight decay applies (matrices: linears and embeddings); not to norms and biases. */
  decay: boolean;
  /** HF _init_weights: normal(0, initializer_range) for linear/embedding weights, zeros for biases, ones for norms. */
  init: InitKind;
}

export interface UnitLayout {
  index: number;
  /** "embed", "layers.3", "head". */
  name: string;
  numel: number;
  params: ParamEntry[];
  /** Other units whose parameters this unit's compute reads (tied lm_head reads unit 0's
   *  embedding): an FSDP plan must have them gathered too while this unit runs. */
  reads: number[];
  /** MoE experts units: the decoder layer whose routed experts this unit holds, and which of them
   *  ([first, first + count) of E; all E unless a plan placed the others elsewhere, see
   *  holdExperts). Absent for every other unit. */
  experts?: { layer: number; first: number; count: number };
  /** A held expert range's unit: the every-expert unit's parameters (names, shapes, offsets in
   *  the full layout), for what is global about it (checkpoint shapes, param_stats offsets). */
  all?: ParamEntry[];
}

export interface ParamLayout {
  units: UnitLayout[];
  byName: Map<string, ParamEntry>;
  totalNumel: number;
  /** Index of the head unit (final norm + lm_head). */
  headUnit: number;
  /** Indices of the vision tower's units (empty for text models). */
  visionUnits: number[];
  /** Per decoder layer: the unit of its routed experts, or -1 (dense layers, dense models). */
  expertUnits: number[];
}

/** Builds one unit's parameter list (names, offsets, shapes) in order. */
export class UnitBuilder {
  params: ParamEntry[] = [];
  numel = 0;
  constructor(readonly index: number) {}
  add(name: string, shape: number[], init: InitKind): void {
    const numel = shape.reduce((a, b) => a * b, 1);
    this.params.push({ name, unit: this.index, offset: this.numel, shape, numel, decay: shape.length >= 2, init });
    this.numel += numel;
  }
}

/** GQA attention (llama / qwen2 / qwen3): q/k/v (+bias), o (+bias), qk-norm. */
function addAttention(b: UnitBuilder, p: string, c: DecoderConfig): void {
  for (const [proj, rows] of [["q_proj", c.NH * c.HS], ["k_proj", c.NKV * c.HS], ["v_proj", c.NKV * c.HS]] as const) {
    b.add(`${p}${proj}.weight`, [rows, c.C], "normal");
    if (c.qkvBias) b.add(`${p}${proj}.bias`, [rows], "zeros");
  }
  b.add(p + "o_proj.weight", [c.C, c.NH * c.HS], "normal");
  if (c.oBias) b.add(p + "o_proj.bias", [c.C], "zeros");
  if (c.qkNorm) {
    b.add(p + "q_norm.weight", [c.HS], "ones");
    b.add(p + "k_norm.weight", [c.HS], "ones");
  }
}

/** DeepSeek-V3 MLA (HF DeepseekV3Attention names); attention_bias puts biases on q_a, kv_a and o. */
function addMla(b: UnitBuilder, p: string, C: number, NH: number, bias: boolean, m: MlaConfig): void {
  const DQK = m.DN + m.DR;
  if (m.QR > 0) {
    b.add(p + "q_a_proj.weight", [m.QR, C], "normal");
    if (bias) b.add(p + "q_a_proj.bias", [m.QR], "zeros");
    b.add(p + "q_a_layernorm.weight", [m.QR], "ones");
    b.add(p + "q_b_proj.weight", [NH * DQK, m.QR], "normal");
  } else {
    b.add(p + "q_proj.weight", [NH * DQK, C], "normal");
  }
  b.add(p + "kv_a_proj_with_mqa.weight", [m.KR + m.DR, C], "normal");
  if (bias) b.add(p + "kv_a_proj_with_mqa.bias", [m.KR + m.DR], "zeros");
  b.add(p + "kv_a_layernorm.weight", [m.KR], "ones");
  b.add(p + "kv_b_proj.weight", [NH * (m.DN + m.DV), m.KR], "normal");
  b.add(p + "o_proj.weight", [C, NH * m.DV], "normal");
  if (bias) b.add(p + "o_proj.bias", [C], "zeros");
}

/** SwiGLU MLP of width I: gate_proj and up_proj adjacent, so they form one (2I,C) matrix. */
function addSwiglu(b: UnitBuilder, p: string, C: number, I: number): void {
  b.add(p + "gate_proj.weight", [I, C], "normal");
  b.add(p + "up_proj.weight", [I, C], "normal");
  b.add(p + "down_proj.weight", [C, I], "normal");
}

/** Sparse MoE block, HF names, but for the routed experts (expertsUnit): router, shared expert. */
function addMoe(b: UnitBuilder, p: string, C: number, m: MoeConfig): void {
  b.add(p + "gate.weight", [m.E, C], "normal");
  // DeepSeek-V3: a buffer HF saves with the weights; steers the choice only (never gets a gradient)
  if (m.router === "sigmoid_group") b.add(p + "gate.e_score_correction_bias", [m.E], "zeros");
  if (m.ISH > 0) addSwiglu(b, m.sharedPrefix.replace("mlp.", p), C, m.ISH);
  if (m.ISH > 0 && m.sharedGate) b.add(p + "shared_expert_gate.weight", [1, C], "normal");
}

/** The unit of layer l's routed experts [first, first + count), HF names, laid out for the grouped
 *  GEMM: every expert's [gate_proj; up_proj] first, in expert order, so all of them are one
 *  (count,2IM,C) block, then every down_proj as one (count,C,IM) block. */
export function expertsUnit(index: number, l: number, C: number, m: MoeConfig, first = 0, count = m.E): UnitLayout {
  const b = new UnitBuilder(index);
  const p = `model.layers.${l}.mlp.experts.`;
  for (let e = first; e < first + count; e++) {
    b.add(`${p}${e}.gate_proj.weight`, [m.IM, C], "normal");
    b.add(`${p}${e}.up_proj.weight`, [m.IM, C], "normal");
  }
  for (let e = first; e < first + count; e++) b.add(`${p}${e}.down_proj.weight`, [C, m.IM], "normal");
  return { index, name: `layers.${l}.experts`, numel: b.numel, params: b.params, reads: [], experts: { layer: l, first, count } };
}

/** HF parameter names and shapes of a decoder (every family of registry.ts), grouped in units. */
export function decoderLayout(c: DecoderConfig): ParamLayout {
  const units: UnitLayout[] = [];
  const finish = (b: UnitBuilder, name: string, reads: number[] = []) =>
    units.push({ index: b.index, name, numel: b.numel, params: b.params, reads });

  const emb = new UnitBuilder(0);
  emb.add("model.embed_tokens.weight", [c.V, c.C], "normal");
  finish(emb, "embed");
  for (let l = 0; l < c.L; l++) {
    const b = new UnitBuilder(l + 1);
    const p = `model.layers.${l}.`;
    b.add(p + "input_layernorm.weight", [c.C], "ones");
    if (c.mla) addMla(b, p + "self_attn.", c.C, c.NH, c.oBias, c.mla);
    else addAttention(b, p + "self_attn.", c);
    b.add(p + "post_attention_layernorm.weight", [c.C], "ones");
    if (c.moe?.sparse[l]) addMoe(b, p + "mlp.", c.C, c.moe);
    else addSwiglu(b, p + "mlp.", c.C, c.I);
    finish(b, `layers.${l}`);
  }
  const head = new UnitBuilder(c.L + 1);
  head.add("model.norm.weight", [c.C], "ones");
  if (!c.tied) head.add("lm_head.weight", [c.V, c.C], "normal");
  finish(head, "head", c.tied ? [0] : []);
  if (c.vision) units.push(...visionUnits(c.vision, c.L + 2));
  const vision = units.slice(c.L + 2).map((u) => u.index);
  const expertUnits = Array.from({ length: c.L }, (_, l) => (c.moe?.sparse[l] ? units.push(expertsUnit(units.length, l, c.C, c.moe)) - 1 : -1));

  const byName = new Map<string, ParamEntry>();
  for (const u of units) for (const p of u.params) byName.set(p.name, p);
  return { units, byName, totalNumel: units.reduce((a, u) => a + u.numel, 0), headUnit: c.L + 1, visionUnits: vision, expertUnits };
}

/** Every difference between the layout and a checkpoint's tensors (missing, unexpected, wrong
 *  shape), listed before any data is read. `lm_head.weight` in a tied checkpoint is accepted
 *  (HF sometimes saves it) and ignored. */
export function checkpointMismatches(layout: ParamLayout, tensors: Map<string, number[]>, tied: boolean): string[] {
  const out: string[] = [];
  for (const [name, p] of layout.byName) {
    const shape = tensors.get(name);
    if (!shape) out.push(`missing ${name} (expected shape [${p.shape}])`);
    else if (shape.length !== p.shape.length || shape.some((d, i) => d !== p.shape[i])) {
      out.push(`${name}: checkpoint shape [${shape}] != config shape [${p.shape}]`);
    }
  }
  for (const name of tensors.keys()) {
    if (layout.byName.has(name)) continue;
    if (tied && name === "lm_head.weight") continue;
    if (name.endsWith("rotary_emb.inv_freq")) continue; // old HF checkpoints store the RoPE table
    out.push(`unexpected ${name} (shape [${tensors.get(name)}])`);
  }
  return out;
}
