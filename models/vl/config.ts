// Hugging Face `config.json` of Qwen2-VL / Qwen2.5-VL -> the vision tower's hyperparameters and the
// multimodal token ids. The Hub files keep the text fields at the top level and the vision ones
// under `vision_config`; newer transformers nest the text ones under `text_config` (read too).
// Shape letters: N patches of an image batch, D vision width, NHv heads, HSv = D / NHv, M MLP
// width, P = C * temporal_patch * patch^2 (1176) values per patch, Cout merger output (= LLM C).
import { ConfigError } from "../config.ts";

type Raw = Record<string, unknown>;

export interface VisionConfig {
  /** "qwen2_vl": LayerNorm + fc1-QuickGELU-fc2 blocks, full attention per frame;
   *  "qwen2_5_vl": RMSNorm + SwiGLU (with biases) blocks, window attention except fullatt blocks. */
  kind: "qwen2_vl" | "qwen2_5_vl";
  depth: number;
  D: number;
  NH: number;
  HS: number;
  M: number;
  /** Merger output width (the LLM's hidden_size). */
  Cout: number;
  inChannels: number;
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
  /** in_channels * temporal_patch_size * patch_size^2: the length of one pixel_values row. */
  P: number;
  act: "quick_gelu" | "silu";
  /** Qwen2.5-VL: window side in pixels, and the blocks that attend over whole frames. */
  windowSize: number;
  fullattBlocks: number[];
  tokensPerSecond: number;
}

/** Token ids and the M-RoPE sections of a multimodal config. */
export interface MultimodalIds {
  imageTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  /** rope_scaling.mrope_section: frequencies per (temporal, height, width); sums to head_dim / 2. */
  mropeSection: number[];
}

function int(raw: Raw, key: string, where: string, dflt?: number): number {
  const v = raw[key] ?? dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new ConfigError(`${where}: "${key}" must be a non-negative integer, got ${JSON.stringify(raw[key])}`);
  return v;
}

/** The text fields of a VL config.json (top level, or text_config when nested) merged for the decoder reader. */
export function textConfigOf(raw: Raw): Raw {
  const tc = raw.text_config;
  return tc && typeof tc === "object" && !Array.isArray(tc) ? { ...raw, ...(tc as Raw), model_type: raw.model_type } : raw;
}

export function parseMultimodalIds(raw: Raw, headDim: number, where: string): MultimodalIds {
  const rs = raw.rope_scaling as Raw | null | undefined;
  const sec = rs?.mrope_section;
  if (!Array.isArray(sec) || sec.length !== 3 || sec.some((x) => typeof x !== "number" || !Number.isInteger(x) || x < 0)) {
    throw new ConfigError(`${where}: rope_scaling.mrope_section must be 3 non-negative integers (temporal, height, width), got ${JSON.stringify(sec)}`);
  }
  const s = sec as number[];
  if (s[0] + s[1] + s[2] !== headDim / 2) throw new ConfigError(`${where}: rope_scaling.mrope_section [${s}] must sum to head_dim / 2 = ${headDim / 2}`);
  return {
    imageTokenId: int(raw, "image_token_id", where),
    visionStartTokenId: int(raw, "vision_start_token_id", where),
    visionEndTokenId: int(raw, "vision_end_token_id", where),
    mropeSection: s,
  };
}

export function parseVisionConfig(raw: Raw, kind: VisionConfig["kind"], textHidden: number, where: string): VisionConfig {
  const vc = raw.vision_config as Raw | undefined;
  if (!vc || typeof vc !== "object") throw new ConfigError(`${where}: "vision_config" is required for model_type ${kind}`);
  const w = `${where} vision_config`;
  const v25 = kind === "qwen2_5_vl";
  const D = int(vc, v25 ? "hidden_size" : "embed_dim", w);
  const NH = int(vc, "num_heads", w);
  const HS = D / NH;
  if (!Number.isInteger(HS) || HS % 4 !== 0) throw new ConfigError(`${w}: width ${D} / num_heads ${NH} must be a multiple of 4 (2-D rotary halves)`);
  const mlpRatio = vc.mlp_ratio ?? 4;
  if (!v25 && (typeof mlpRatio !== "number" || !(mlpRatio > 0))) throw new ConfigError(`${w}: "mlp_ratio" must be a positive number, got ${JSON.stringify(mlpRatio)}`);
  const act = String(vc.hidden_act ?? (v25 ? "silu" : "quick_gelu"));
  if (act !== (v25 ? "silu" : "quick_gelu")) throw new ConfigError(`${w}: hidden_act "${act}" is not supported for ${kind} (expected ${v25 ? "silu" : "quick_gelu"})`);
  const inChannels = int(vc, vc.in_channels !== undefined ? "in_channels" : "in_chans", w, 3);
  const patchSize = int(vc, "patch_size", w, 14);
  const temporalPatchSize = int(vc, "temporal_patch_size", w, 2);
  const mergeSize = int(vc, "spatial_merge_size", w, 2);
  const Cout = int(vc, v25 ? "out_hidden_size" : "hidden_size", w);
  if (Cout !== textHidden) throw new ConfigError(`${w}: merger output ${Cout} must equal the text hidden_size ${textHidden}`);
  const full = vc.fullatt_block_indexes ?? [];
  if (!Array.isArray(full) || full.some((x) => typeof x !== "number")) throw new ConfigError(`${w}: "fullatt_block_indexes" must be a list of integers`);
  const windowSize = v25 ? int(vc, "window_size", w) : 0;
  if (v25 && (windowSize < patchSize * mergeSize || windowSize % (patchSize * mergeSize) !== 0)) {
    throw new ConfigError(`${w}: window_size ${windowSize} must be a positive multiple of patch_size * spatial_merge_size = ${patchSize * mergeSize}`);
  }
  return {
    kind, depth: int(vc, "depth", w), D, NH, HS,
    M: v25 ? int(vc, "intermediate_size", w) : Math.floor(D * (mlpRatio as number)),
    Cout, inChannels, patchSize, temporalPatchSize, mergeSize,
    P: inChannels * temporalPatchSize * patchSize * patchSize,
    act: v25 ? "silu" : "quick_gelu",
    windowSize, fullattBlocks: full as number[],
    tokensPerSecond: v25 ? int(vc, "tokens_per_second", w, 2) : 0,
  };
}
