// Qwen2 / Qwen2.5 (HF Qwen2ForCausalLM): a Llama decoder with biases on q/k/v (never on o);
// small sizes tie lm_head to the embedding (tie_word_embeddings).
import type { ModelFamily } from "../registry.ts";
import { DENSE_DECODER_PLAN } from "../plan.ts";

export const qwen2: ModelFamily = {
  modelType: "qwen2",
  flags: { qkvBias: true, oBias: false, qkNorm: false, tiedDefault: false },
  plan: DENSE_DECODER_PLAN,
};
