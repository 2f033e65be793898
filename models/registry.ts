// Model registry keyed by Hugging Face `config.model_type`. A family contributes its config
// flags and its parallel plan; the decoder (decoder.ts) is shared by all of them.
import { ConfigError, parseDecoderConfig, type DecoderConfig, type FamilyFlags } from "./config.ts";
import type { ParallelPlan } from "./plan.ts";
import { llama } from "./llama/index.ts";
import { qwen2 } from "./qwen2/index.ts";
import { qwen3 } from "./qwen3/index.ts";
import { qwen2Moe } from "./qwen2_moe/index.ts";
import { qwen3Moe } from "./qwen3_moe/index.ts";
import { qwen25Vl, qwen2Vl } from "./vl/index.ts";
import { deepseekV3 } from "./deepseek_v3/index.ts";

export interface ModelFamily {
  modelType: string;
  flags: FamilyFlags;
  plan: ParallelPlan;
}

const FAMILIES = new Map<string, ModelFamily>([llama, qwen2, qwen3, qwen2Moe, qwen3Moe, deepseekV3, qwen2Vl, qwen25Vl].map((f) => [f.modelType, f]));

export function supportedModelTypes(): string[] {
  return [...FAMILIES.keys()].sort();
}

export function familyOf(modelType: unknown, where: string): ModelFamily {
  const f = typeof modelType === "string" ? FAMILIES.get(modelType) : undefined;
  if (!f) {
    throw new ConfigError(
      `${where}: model_type ${JSON.stringify(modelType)} is not supported (supported: ${supportedModelTypes().join(", ")})`,
    );
  }
  return f;
}

/** Parse a HF config.json object into the decoder config of its family. */
export function resolveConfig(raw: Record<string, unknown>, where: string): { config: DecoderConfig; family: ModelFamily } {
  const family = familyOf(raw.model_type, where);
  return { config: parseDecoderConfig(raw, family.flags, where), family };
}
