// Building a model: from a HF folder (config.json + safetensors, single or sharded) or from a
// config alone with seeded random init, whole (materialize) or, for a sharding plan, as a meta
// model and its WeightSource (weights.ts). Every shape mismatch is listed before any data is read.
import type { Kernels } from "../kernels/index.ts";
import type { StDtype, TensorSpec } from "../checkpoint/safetensors.ts";
import { readConfigJson } from "./config.ts";
import { DecoderLM, type DecoderOptions } from "./decoder.ts";
import { resolveConfig } from "./registry.ts";
import { fillUnitRange, initSource, safetensorsSource, type WeightSource } from "./weights.ts";

/** A model from a config.json object (random init; see init.ts). */
export function createModel(k: Kernels, raw: Record<string, unknown>, where: string, opts: DecoderOptions): DecoderLM {
  const { config, family } = resolveConfig(raw, where);
  return new DecoderLM(k, config, family, opts);
}

/**
 * Allocate (where absent: a meta model) and fill every unit's full parameter buffer from `src`.
 * On the CPU backend the values land in the tensor's own memory; elsewhere through one unit-sized
 * staging array at a time.
 */
export function materialize(model: DecoderLM, src: WeightSource): void {
  const { k, layout } = model;
  for (const u of layout.units) {
    model.params[u.index] ??= k.alloc([u.numel], "f32", { name: `${u.name}.params` });
    const t = model.params[u.index];
    const host = t.host ?? new Float32Array(u.numel);
    fillUnitRange(u, 0, host.subarray(0, u.numel), src);
    if (!t.host) k.upload(t, host);
  }
}

/** HF _init_weights with a seeded PRNG (values depend only on seed and parameter name). */
export function initWeights(model: DecoderLM, seed: number): void {
  materialize(model, initSource(seed, model.config.initializerRange));
}

/** Model from `config_path` (a config.json file or a folder holding one), randomly initialised. */
export function initModelFromConfig(k: Kernels, configPath: string, seed: number, opts: DecoderOptions): DecoderLM {
  const { model, source } = modelWithSource(k, { config_path: configPath, model_path: null }, seed, opts);
  materialize(model, source);
  return model;
}

/** Load weights from a HF folder into `model` (f32 master copy of BF16/F16/F32 tensors). */
export function loadWeights(model: DecoderLM, dir: string): void {
  const src = safetensorsSource(dir, model.layout, model.config.tied, model.config.modelType);
  try {
    materialize(model, src);
  } finally {
    src.close();
  }
}

/** A model from a HF folder: config.json + model.safetensors (or shards + index). */
export function loadPretrained(k: Kernels, dir: string, opts: DecoderOptions): DecoderLM {
  const path = `${dir}/config.json`;
  const model = createModel(k, readConfigJson(path), path, opts);
  loadWeights(model, dir);
  return model;
}

/**
 * The model `model_path` (a HF folder) or `config_path` (random init with `seed`) describes,
 * and where its values come from; with `opts.meta` it holds no parameters yet (a plan fills its
 * shards from the source, or materialize() the whole). The caller closes the source.
 */
export function modelWithSource(
  k: Kernels,
  m: { model_path: string | null; config_path: string | null },
  seed: number,
  opts: DecoderOptions,
): { model: DecoderLM; source: WeightSource } {
  if (m.model_path) {
    const path = `${m.model_path}/config.json`;
    const model = createModel(k, readConfigJson(path), path, opts);
    return { model, source: safetensorsSource(m.model_path, model.layout, model.config.tied, model.config.modelType) };
  }
  if (m.config_path) {
    const path = m.config_path.endsWith(".json") ? m.config_path : `${m.config_path}/config.json`;
    const model = createModel(k, readConfigJson(path), path, opts);
    return { model, source: initSource(seed, model.config.initializerRange) };
  }
  throw new Error("model.model_path (a Hugging Face folder) or model.config_path (config.json for random init) is required");
}

/** Every parameter as HF-named host data (a sync point per unit), for safetensors export. */
export async function exportTensors(model: DecoderLM, dtype: StDtype = "F32"): Promise<(TensorSpec & { data: Float32Array })[]> {
  const out: (TensorSpec & { data: Float32Array })[] = [];
  for (const u of model.layout.units) {
    const host = await model.k.read(model.params[u.index]);
    for (const p of u.params) out.push({ name: p.name, dtype, shape: p.shape, data: host.subarray(p.offset, p.offset + p.numel) });
  }
  return out;
}
