// DeepSeek-V3 (HF DeepseekV3ForCausalLM): multi-head latent attention (blocks/mla.ts: q/kv
// low-rank projections, decoupled RoPE dims, rope_interleave, yarn), and from layer
// first_k_dense_replace on a MoE block with a sigmoid router (e_score_correction_bias for the
// choice, group-limited top-k, routed_scaling_factor) plus ungated shared experts. HF has no
// load-balancing loss for it (the bias balances the load): the objective is the plain CE.
import type { ModelFamily } from "../registry.ts";
import { MOE_DECODER_PLAN } from "../plan.ts";

export const deepseekV3: ModelFamily = {
  modelType: "deepseek_v3",
  flags: { qkvBias: false, oBias: true, qkNorm: false, tiedDefault: false, mla: true, moe: { kind: "deepseek_v3", normTopkProbDefault: true, auxCoefDefault: 0 } },
  plan: MOE_DECODER_PLAN,
};
