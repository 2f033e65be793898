// Qwen2-VL and Qwen2.5-VL (HF Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration):
// the Qwen2 decoder (q/k/v bias) with M-RoPE, plus a vision tower (vision.ts) whose features fill
// the image-token positions. Checkpoints use the Hub names (model.*, lm_head, visual.*).
import type { ModelFamily } from "../registry.ts";
import { DENSE_DECODER_PLAN } from "../plan.ts";

export const qwen2Vl: ModelFamily = {
  modelType: "qwen2_vl",
  flags: { qkvBias: true, oBias: false, qkNorm: false, tiedDefault: false, vision: "qwen2_vl" },
  plan: DENSE_DECODER_PLAN,
};

export const qwen25Vl: ModelFamily = {
  modelType: "qwen2_5_vl",
  flags: { qkvBias: true, oBias: false, qkNorm: false, tiedDefault: false, vision: "qwen2_5_vl" },
  plan: DENSE_DECODER_PLAN,
};
