// Qwen3-MoE (HF Qwen3MoeForCausalLM): the Qwen3 decoder (qk-norm, explicit head_dim, optional
// attention_bias) whose MLP is a sparse MoE block on the layers config.json makes sparse:
// router softmax in f32 -> top-k -> renormalised when norm_topk_prob -> SwiGLU experts.
import type { ModelFamily } from "../registry.ts";
import { MOE_DECODER_PLAN } from "../plan.ts";

export const qwen3Moe: ModelFamily = {
  modelType: "qwen3_moe",
  flags: { qkvBias: false, oBias: true, qkNorm: true, tiedDefault: false, moe: { kind: "qwen3_moe", normTopkProbDefault: false, auxCoefDefault: 0.001 } },
  plan: MOE_DECODER_PLAN,
};
