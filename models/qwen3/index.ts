// Qwen3 (HF Qwen3ForCausalLM): a Llama decoder with a per-head RMSNorm (weight of size head_dim)
// on q and k before RoPE; head_dim is explicit (may differ from hidden_size / heads);
// `attention_bias` puts a bias on q/k/v/o.
import type { ModelFamily } from "../registry.ts";
import { DENSE_DECODER_PLAN } from "../plan.ts";

export const qwen3: ModelFamily = {
  modelType: "qwen3",
  flags: { qkvBias: false, oBias: true, qkNorm: true, tiedDefault: false },
  plan: DENSE_DECODER_PLAN,
};
