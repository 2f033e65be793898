// Hugging Face `config.json` -> the decoder's hyperparameters. One reader for the decoder families
// (llama, qwen2, qwen3 and the MoE ones); family differences (biases, qk-norm, MoE) come from the
// registry.
// Shape letters used across models/: T tokens in a packed row, C hidden_size, I intermediate_size,
// V vocab_size, L layers, NH query heads, NKV key/value heads, HS head_dim.
import { readFileSync } from "node:fs";
import type { RopeScaling } from "../kernels/index.ts";
import { parseMultimodalIds, parseVisionConfig, textConfigOf, type MultimodalIds, type VisionConfig } from "./vl/config.ts";

export interface DecoderConfig {
  modelType: string;
  V: number;
  C: number;
  I: number;
  L: number;
  NH: number;
  NKV: number;
  HS: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  eps: number;
  tied: boolean;
  /** Bias on q/k/v projections (qwen2 always; llama/qwen3 when attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (llama/qwen3 attention_bias). */
  oBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (qwen3). */
  qkNorm: boolean;
  initializerRange: number;
  maxPositions: number;
  eosTokenIds: number[];
  bosTokenId: number | null;
  /** Mixture of experts (qwen2_moe / qwen3_moe); null for dense families. */
  moe: MoeConfig | null;
  /** Vision-language families (qwen2_vl, qwen2_5_vl): the vision tower; null for text models. */
  vision: VisionConfig | null;
  /** Multimodal token ids and the M-RoPE sections (with `vision`); positions are then 3-D (get_rope_index). */
  mm: MultimodalIds | null;
  /** DeepSeek-V3 latent attention (its biases follow attention_bias: oBias); null for the others. */
  mla: MlaConfig | null;
  /** The parsed config.json as read (written back unchanged with exported weights). */
  raw: Record<string, unknown>;
}

/** HF Qwen2Moe/Qwen3Moe/DeepseekV3 config fields. Shape letters: E experts, K experts per token,
 *  IM expert width. */
export interface MoeConfig {
  /** num_experts (deepseek: n_routed_experts) */
  E: number;
  /** num_experts_per_tok */
  K: number;
  /** moe_intermediate_size */
  IM: number;
  /** Width of the shared expert(s), 0 = none: qwen2_moe shared_expert_intermediate_size (scaled
   *  by sigmoid(shared_expert_gate(x))); deepseek_v3 moe_intermediate_size * n_shared_experts (unscaled). */
  ISH: number;
  /** Parameter prefix of the shared expert: "mlp.shared_expert." (qwen2_moe) or "mlp.shared_experts." (deepseek_v3). */
  sharedPrefix: string;
  /** qwen2_moe: the shared expert is scaled by sigmoid(mlp.shared_expert_gate(x)). */
  sharedGate: boolean;
  /** softmax: Qwen's f32 softmax -> top-k. sigmoid_group: DeepSeek-V3's sigmoid scores, + e_score_correction_bias
   *  for the choice only, top-k within the topk_group best of n_group groups, weights = scores * routed_scaling_factor. */
  router: "softmax" | "sigmoid_group";
  nGroup: number;
  topkGroup: number;
  routedScalingFactor: number;
  /** HF's load_balancing_loss_func exists for this family (Qwen MoE; DeepSeek-V3 balances by the bias instead). */
  auxLoss: boolean;
  /** Renormalise the top-k softmax weights to sum to 1. */
  normTopkProb: boolean;
  /** Per layer: sparse MoE block (true) or the dense MLP of intermediate_size (mlp_only_layers,
   *  decoder_sparse_step: layer l is sparse iff l not in mlp_only_layers and (l + 1) % step == 0). */
  sparse: boolean[];
  /** output_router_logits: add routerAuxLossCoef * load-balancing loss to the objective. */
  outputRouterLogits: boolean;
  routerAuxLossCoef: number;
}

export class ConfigError extends Error {}

type Raw = Record<string, unknown>;

function num(raw: Raw, key: string, where: string, dflt?: number): number {
  const v = raw[key] ?? dflt;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new ConfigError(`${where}: "${key}" must be a number, got ${JSON.stringify(raw[key])}`);
  }
  return v;
}

function posInt(raw: Raw, key: string, where: string, dflt?: number): number {
  const v = num(raw, key, where, dflt);
  if (!Number.isInteger(v) || v <= 0) throw new ConfigError(`${where}: "${key}" must be a positive integer, got ${v}`);
  return v;
}

function parseRopeScaling(raw: Raw, where: string): RopeScaling | null {
  const rs = raw.rope_scaling as Raw | null | undefined;
  if (rs === null || rs === undefined) return null;
  const type = (rs.rope_type ?? rs.type) as string | undefined;
  if (type === "default") return null;
  if (type === "yarn") {
    // HF _compute_yarn_parameters: with original_max_position_embeddings the factor is the ratio
    // of max_position_embeddings to it; the cos/sin scale from attention_factor or the mscales
    const w = `${where} rope_scaling`;
    const maxPos = num(raw, "max_position_embeddings", where, 4096);
    const hasOrig = rs.original_max_position_embeddings !== undefined && rs.original_max_position_embeddings !== null;
    const orig = hasOrig ? num(rs, "original_max_position_embeddings", w) : maxPos;
    const factor = hasOrig ? maxPos / orig : num(rs, "factor", w);
    const ms = rs.mscale as number | undefined, msAll = rs.mscale_all_dim as number | undefined;
    const attention = typeof rs.attention_factor === "number" ? rs.attention_factor
      : ms && msAll ? yarnMscale(factor, ms) / yarnMscale(factor, msAll) : yarnMscale(factor);
    return {
      rope_type: "yarn", factor, original_max_position_embeddings: orig, attention_factor: attention,
      beta_fast: typeof rs.beta_fast === "number" && rs.beta_fast ? rs.beta_fast : 32,
      beta_slow: typeof rs.beta_slow === "number" && rs.beta_slow ? rs.beta_slow : 1,
      truncate: rs.truncate === undefined ? true : rs.truncate === true,
    };
  }
  if (type !== "llama3") {
    throw new ConfigError(`${where}: rope_scaling type ${JSON.stringify(type)} is not supported (supported: default, llama3, yarn)`);
  }
  return {
    rope_type: "llama3",
    factor: num(rs, "factor", `${where} rope_scaling`),
    low_freq_factor: num(rs, "low_freq_factor", `${where} rope_scaling`),
    high_freq_factor: num(rs, "high_freq_factor", `${where} rope_scaling`),
    original_max_position_embeddings: num(rs, "original_max_position_embeddings", `${where} rope_scaling`),
  };
}

export interface FamilyFlags {
  qkvBias: boolean;
  oBias: boolean;
  qkNorm: boolean;
  /** HF default of tie_word_embeddings for this family when the key is absent. */
  tiedDefault: boolean;
  /** Multi-head latent attention (deepseek_v3). */
  mla?: boolean;
  /** Mixture-of-experts family: what it reads from config.json (null: dense). */
  moe?: { kind: "qwen2_moe" | "qwen3_moe" | "deepseek_v3"; normTopkProbDefault: boolean; auxCoefDefault: number } | null;
  /** A vision-language family: its vision tower kind (text fields may be nested under text_config). */
  vision?: VisionConfig["kind"];
}

/** DeepSeek-V3 multi-head latent attention (HF DeepseekV3Attention). Shape letters: QR q_lora_rank
 *  (0 = a plain q_proj), KR kv_lora_rank, DN qk_nope_head_dim, DR qk_rope_head_dim, DV v_head_dim. */
export interface MlaConfig {
  QR: number;
  KR: number;
  DN: number;
  DR: number;
  DV: number;
  /** rope_interleave: RoPE rotates adjacent pairs (x0,x1),(x2,x3).. of the rope dims. */
  interleave: boolean;
  /** softmax scale: (DN+DR)^-0.5, times yarn mscale(factor, mscale_all_dim)^2 when rope_scaling sets it. */
  scale: number;
}

function bool(raw: Raw, key: string, where: string, dflt: boolean): boolean {
  const v = raw[key] ?? dflt;
  if (typeof v !== "boolean") throw new ConfigError(`${where}: "${key}" must be true or false, got ${JSON.stringify(raw[key])}`);
  return v;
}

function parseMoe(raw: Raw, f: NonNullable<FamilyFlags["moe"]>, L: number, where: string): MoeConfig {
  const deepseek = f.kind === "deepseek_v3";
  const eKey = deepseek ? "n_routed_experts" : "num_experts";
  const E = posInt(raw, eKey, where);
  const K = posInt(raw, "num_experts_per_tok", where);
  if (K > E) throw new ConfigError(`${where}: num_experts_per_tok (${K}) must be <= ${eKey} (${E})`);
  const IM = posInt(raw, "moe_intermediate_size", where);
  const common = { E, K, IM, normTopkProb: bool(raw, "norm_topk_prob", where, f.normTopkProbDefault) };
  if (deepseek) {
    const fk = num(raw, "first_k_dense_replace", where, 3);
    if (!Number.isInteger(fk) || fk < 0) throw new ConfigError(`${where}: "first_k_dense_replace" must be an integer >= 0, got ${fk}`);
    const nGroup = posInt(raw, "n_group", where, 8), topkGroup = posInt(raw, "topk_group", where, 4);
    if (E % nGroup !== 0) throw new ConfigError(`${where}: n_routed_experts (${E}) must be a multiple of n_group (${nGroup})`);
    if (topkGroup > nGroup || K > topkGroup * (E / nGroup)) {
      throw new ConfigError(`${where}: topk_group (${topkGroup}) groups of ${E / nGroup} experts must hold num_experts_per_tok (${K}) and topk_group <= n_group (${nGroup})`);
    }
    if ((raw.scoring_func ?? "sigmoid") !== "sigmoid") throw new ConfigError(`${where}: scoring_func ${JSON.stringify(raw.scoring_func)} is not supported (expected sigmoid)`);
    if ((raw.topk_method ?? "noaux_tc") !== "noaux_tc") throw new ConfigError(`${where}: topk_method ${JSON.stringify(raw.topk_method)} is not supported (expected noaux_tc)`);
    return {
      ...common, ISH: IM * num(raw, "n_shared_experts", where, 1), sharedPrefix: "mlp.shared_experts.", sharedGate: false,
      sparse: Array.from({ length: L }, (_, l) => l >= fk), router: "sigmoid_group", nGroup, topkGroup,
      routedScalingFactor: num(raw, "routed_scaling_factor", where, 2.5), auxLoss: false, outputRouterLogits: false, routerAuxLossCoef: 0,
    };
  }
  const step = posInt(raw, "decoder_sparse_step", where, 1);
  const only = raw.mlp_only_layers ?? [];
  if (!Array.isArray(only) || only.some((l) => !Number.isInteger(l) || l < 0 || l >= L)) {
    throw new ConfigError(`${where}: "mlp_only_layers" must be a list of layer indices in [0, ${L}), got ${JSON.stringify(raw.mlp_only_layers)}`);
  }
  return {
    ...common,
    ISH: f.kind === "qwen2_moe" ? posInt(raw, "shared_expert_intermediate_size", where) : 0, sharedPrefix: "mlp.shared_expert.", sharedGate: true,
    sparse: Array.from({ length: L }, (_, l) => !only.includes(l) && (l + 1) % step === 0),
    router: "softmax", nGroup: 1, topkGroup: 1, routedScalingFactor: 1, auxLoss: true,
    outputRouterLogits: bool(raw, "output_router_logits", where, false),
    routerAuxLossCoef: num(raw, "router_aux_loss_coef", where, f.auxCoefDefault),
  };
}

/** HF yarn get_mscale. */
function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

function parseMla(raw: Raw, ropeScaling: RopeScaling | null, where: string): MlaConfig {
  const qr = raw.q_lora_rank;
  const DN = posInt(raw, "qk_nope_head_dim", where, 128), DR = posInt(raw, "qk_rope_head_dim", where, 64);
  if (DR % 2 !== 0) throw new ConfigError(`${where}: qk_rope_head_dim ${DR} must be even`);
  let scale = 1 / Math.sqrt(DN + DR);
  const rs = raw.rope_scaling as Raw | null | undefined;
  if (ropeScaling && rs && typeof rs.mscale_all_dim === "number" && rs.mscale_all_dim) {
    const m = yarnMscale(num(rs, "factor", `${where} rope_scaling`), rs.mscale_all_dim);
    scale *= m * m;
  }
  const DV = posInt(raw, "v_head_dim", where, 128);
  if (DV > DN + DR) throw new ConfigError(`${where}: v_head_dim (${DV}) must be <= qk_nope_head_dim + qk_rope_head_dim (${DN + DR})`);
  return {
    QR: qr === null || qr === undefined ? 0 : posInt(raw, "q_lora_rank", where),
    KR: posInt(raw, "kv_lora_rank", where, 512), DN, DR, DV,
    interleave: bool(raw, "rope_interleave", where, true), scale,
  };
}

/** Parse a config.json object with a family's flags (see registry.ts). `where` names the file. */
export function parseDecoderConfig(full: Raw, flags: FamilyFlags, where: string): DecoderConfig {
  const raw = flags.vision ? textConfigOf(full) : full;
  const q = full.quantization_config as Raw | null | undefined;
  if (q !== undefined && q !== null) {
    // e.g. DeepSeek-V3's published fp8 weights (quant_method fp8, weight_scale_inv tensors)
    throw new ConfigError(`${where}: quantization_config (quant_method ${JSON.stringify(q.quant_method)}) is not supported: training reads unquantized weights; dequantize the checkpoint to bf16 or f32 first`);
  }
  const C = posInt(raw, "hidden_size", where);
  const NH = posInt(raw, "num_attention_heads", where);
  const NKV = posInt(raw, "num_key_value_heads", where, NH);
  if (NH % NKV !== 0) throw new ConfigError(`${where}: num_attention_heads (${NH}) must be a multiple of num_key_value_heads (${NKV})`);
  const hd = raw.head_dim;
  const ropeScaling = flags.vision ? null : parseRopeScaling(raw, where); // VL: M-RoPE sections in `mm`
  const mla = flags.mla ? parseMla(raw, ropeScaling, where) : null;
  // MLA: head_dim is the rotary part (DeepseekV3Config sets head_dim = qk_rope_head_dim)
  const HS = mla ? mla.DR : hd === null || hd === undefined ? C / NH : posInt(raw, "head_dim", where);
  if (!Number.isInteger(HS) || HS % 2 !== 0) throw new ConfigError(`${where}: head_dim ${HS} (hidden_size / num_attention_heads) must be an even integer`);
  const act = raw.hidden_act ?? "silu";
  if (act !== "silu") throw new ConfigError(`${where}: hidden_act "${String(act)}" is not supported (expected silu)`);
  if (raw.mlp_bias === true) throw new ConfigError(`${where}: mlp_bias true is not supported`);
  if (raw.use_sliding_window === true) throw new ConfigError(`${where}: use_sliding_window true is not supported`);
  if (raw.partial_rotary_factor !== undefined && raw.partial_rotary_factor !== 1) {
    throw new ConfigError(`${where}: partial_rotary_factor ${String(raw.partial_rotary_factor)} is not supported (expected 1)`);
  }
  const eos = raw.eos_token_id;
  const attnBias = raw.attention_bias === true;
  const L = posInt(raw, "num_hidden_layers", where);
  return {
    modelType: String(raw.model_type),
    V: posInt(raw, "vocab_size", where),
    C,
    I: posInt(raw, "intermediate_size", where),
    L,
    NH,
    NKV,
    HS,
    ropeTheta: num(raw, "rope_theta", where, 10000),
    ropeScaling, // VL: null (M-RoPE sections in `mm`)
    eps: num(raw, "rms_norm_eps", where, 1e-6),
    tied: typeof raw.tie_word_embeddings === "boolean" ? raw.tie_word_embeddings : flags.tiedDefault,
    // qwen2 / qwen2_moe: q/k/v bias unless config.json says qkv_bias false (newer Qwen2MoeConfig)
    qkvBias: (flags.qkvBias && raw.qkv_bias !== false) || attnBias,
    oBias: flags.oBias && attnBias,
    qkNorm: flags.qkNorm,
    initializerRange: num(raw, "initializer_range", where, 0.02),
    maxPositions: posInt(raw, "max_position_embeddings", where, 4096),
    eosTokenIds: typeof eos === "number" ? [eos] : Array.isArray(eos) ? eos.filter((x): x is number => typeof x === "number") : [],
    bosTokenId: typeof raw.bos_token_id === "number" ? raw.bos_token_id : null,
    moe: flags.moe ? parseMoe(raw, flags.moe, L, where) : null,
    mla,
    vision: flags.vision ? parseVisionConfig(full, flags.vision, C, where) : null,
    mm: flags.vision ? parseMultimodalIds(raw, HS, where) : null,
    raw: full,
  };
}

export function readConfigJson(path: string): Raw {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`${path}: cannot read model config: ${(e as Error).message}`);
  }
  try {
    const raw = JSON.parse(text);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new Error("not a JSON object");
    return raw as Raw;
  } catch (e) {
    throw new ConfigError(`${path}: invalid config.json: ${(e as Error).message}`);
  }
}
