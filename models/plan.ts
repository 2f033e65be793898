// Parallel plans as data (torchtitan style): a map from HF parameter-name pattern to placement.
// The mesh applies them from outside; model code never branches on parallelism.
//   colwise: weight (OC, C) split along OC (dim 0), bias split too; output stays sharded.
//   rowwise: weight (C, IC) split along IC (dim 1); output partial sums are all-reduced (or
//            reduce-scattered under sequence parallelism); bias added once after the reduce.
//   vocab:   embedding / lm_head rows split over the vocabulary (vocab-parallel CE).
//   replicate: kept whole on every TP rank (norms).
export type Placement = "colwise" | "rowwise" | "vocab" | "replicate";

export interface ParallelPlan {
  /** Pattern ("*" = layer index) -> placement. */
  tensorParallel: Record<string, Placement>;
  /** Where Ulysses all-to-all (sequence <-> heads) wraps the core attention. */
  ulyssesAround: "attention";
  /** FSDP wrapping unit: one per decoder layer + embeddings + head (see layout.ts). */
  fsdpUnit: "decoder_layer";
}

export const DENSE_DECODER_PLAN: ParallelPlan = {
  tensorParallel: {
    "model.embed_tokens.weight": "vocab",
    "model.layers.*.input_layernorm.weight": "replicate",
    "model.layers.*.self_attn.q_proj.weight": "colwise",
    "model.layers.*.self_attn.q_proj.bias": "colwise",
    "model.layers.*.self_attn.k_proj.weight": "colwise",
    "model.layers.*.self_attn.k_proj.bias": "colwise",
    "model.layers.*.self_attn.v_proj.weight": "colwise",
    "model.layers.*.self_attn.v_proj.bias": "colwise",
    "model.layers.*.self_attn.o_proj.weight": "rowwise",
    "model.layers.*.self_attn.o_proj.bias": "replicate",
    "model.layers.*.self_attn.q_norm.weight": "replicate",
    "model.layers.*.self_attn.k_norm.weight": "replicate",
    "model.layers.*.post_attention_layernorm.weight": "replicate",
    "model.layers.*.mlp.gate_proj.weight": "colwise",
    "model.layers.*.mlp.up_proj.weight": "colwise",
    "model.layers.*.mlp.down_proj.weight": "rowwise",
    "model.norm.weight": "replicate",
    "lm_head.weight": "vocab",
  },
  ulyssesAround: "attention",
  fsdpUnit: "decoder_layer",
};

/** Qwen2-MoE / Qwen3-MoE: the dense plan for attention, norms and dense MLPs; routed experts
 *  (`mlp.experts.<e>.*`) are whole experts placed by expert parallelism, not split by TP; the
 *  router and the shared expert's gate stay whole on every rank. */
export const MOE_DECODER_PLAN: ParallelPlan = {
  ...DENSE_DECODER_PLAN,
  tensorParallel: {
    ...DENSE_DECODER_PLAN.tensorParallel,
    "model.layers.*.mlp.gate.weight": "replicate",
    "model.layers.*.mlp.shared_expert.gate_proj.weight": "colwise",
    "model.layers.*.mlp.shared_expert.up_proj.weight": "colwise",
    "model.layers.*.mlp.shared_expert.down_proj.weight": "rowwise",
    "model.layers.*.mlp.shared_expert_gate.weight": "replicate",
  },
};

/** Placement of one HF parameter name under a plan ("replicate" when no pattern matches). */
export function placementOf(plan: ParallelPlan, name: string): Placement {
  const generic = name.replace(/^model\.layers\.\d+\./, "model.layers.*.");
  return plan.tensorParallel[generic] ?? "replicate";
}
