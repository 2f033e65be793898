// Qwen2-MoE (HF Qwen2MoeForCausalLM): the Qwen2 decoder (q/k/v bias) whose sparse layers add one
// shared expert (shared_expert_intermediate_size) scaled by sigmoid(shared_expert_gate(x)) to
// the routed experts.
import type { ModelFamily } from "../registry.ts";
import { MOE_DECODER_PLAN } from "../plan.ts";

export const qwen2Moe: ModelFamily = {
  modelType: "qwen2_moe",
  flags: { qkvBias: true, oBias: false, qkNorm: false, tiedDefault: false, moe: { kind: "qwen2_moe", normTopkProbDefault: false, auxCoefDefault: 0.001 } },
  plan: MOE_DECODER_PLAN,
};
