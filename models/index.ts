// models/: the public surface. Registry keyed by HF model_type; one decoder for llama / qwen2 /
// qwen3 / qwen2_moe / qwen3_moe built from blocks/ (dense MLP or MoE block per layer); flat
// per-unit parameter layout; FSDP-style unit hooks.
export { DecoderLM, type DecoderOptions, type UnitHooks } from "./decoder.ts";
export { LocalAttention, type AttentionCore, type AttnSaved } from "./blocks/attention.ts";
export type { BatchInputs } from "./blocks/arena.ts";
export type { RouterStatsReduce } from "./blocks/router.ts";
export type { ExpertCore, MoeSaved, MoeScratch } from "./blocks/moe.ts";
export { ConfigError, readConfigJson, type DecoderConfig } from "./config.ts";
export { resolveConfig, familyOf, supportedModelTypes, type ModelFamily } from "./registry.ts";
export { decoderLayout, checkpointMismatches, type ParamLayout, type ParamEntry, type UnitLayout } from "./layout.ts";
export { DENSE_DECODER_PLAN, placementOf, type ParallelPlan, type Placement } from "./plan.ts";
export { createModel, initWeights, initModelFromConfig, loadWeights, loadPretrained, exportTensors, materialize, modelWithSource } from "./load.ts";
export { fillUnitRange, initSource, modelSource, safetensorsSource, type WeightSource } from "./weights.ts";
export { generate, argmax, sample, promptLoss, type GenerateOptions, type GenerateResult } from "./generate.ts";
