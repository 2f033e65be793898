// Llama (HF LlamaForCausalLM): RMSNorm, RoPE (default or llama3 scaling), GQA, SwiGLU;
// `attention_bias` puts a bias on q/k/v/o; lm_head untied by default.
import type { ModelFamily } from "../registry.ts";
import { DENSE_DECODER_PLAN } from "../plan.ts";

export const llama: ModelFamily = {
  modelType: "llama",
  flags: { qkvBias: false, oBias: true, qkNorm: false, tiedDefault: false },
  plan: DENSE_DECODER_PLAN,
};
