// Building a model: from a HF folder (config.json + safetensors, single or sharded) or from a
// config alone with seeded random init. Every shape mismatch is listed before any data is read.
import type { Kernels } from "../kernels/index.ts";
import { SafetensorsFolder, type StDtype, type TensorSpec } from "../checkpoint/safetensors.ts";
import { ConfigError, readConfigJson } from "./config.ts";
import { DecoderLM, type DecoderOptions } from "./decoder.ts";
import { initParam } from "./init.ts";
import { checkpointMismatches } from "./layout.ts";
import { resolveConfig } from "./registry.ts";

/** A model from a config.json object (random init; see init.ts). */
export function createModel(k: Kernels, raw: Record<string, unknown>, where: string, opts: DecoderOptions): DecoderLM {
  const { config, family } = resolveConfig(raw, where);
  return new DecoderLM(k, config, family, opts);
}

/** HF _init_weights with a seeded PRNG (values depend only on seed and parameter name). */
export function initWeights(model: DecoderLM, seed: number): void {
  const std = model.config.initializerRange;
  for (const u of model.layout.units) {
    const host = new Float32Array(u.numel);
    for (const p of u.params) initParam(host.subarray(p.offset, p.offset + p.numel), p, seed, std);
    model.k.upload(model.params[u.index], host);
  }
}

/** Model from `config_path` (a config.json file or a folder holding one), randomly initialised. */
export function initModelFromConfig(k: Kernels, configPath: string, seed: number, opts: DecoderOptions): DecoderLM {
  const path = configPath.endsWith(".json") ? configPath : `${configPath}/config.json`;
  const model = createModel(k, readConfigJson(path), path, opts);
  initWeights(model, seed);
  return model;
}

/** Load weights from a HF folder into `model` (f32 master copy of BF16/F16/F32 tensors). */
export function loadWeights(model: DecoderLM, dir: string): void {
  const st = new SafetensorsFolder(dir);
  try {
    const shapes = new Map(st.names().map((n) => [n, st.info(n)!.shape]));
    const bad = checkpointMismatches(model.layout, shapes, model.config.tied);
    if (bad.length) {
      throw new ConfigError(`${dir}: checkpoint does not match config.json (model_type ${model.config.modelType}), ${bad.length} mismatches:\n  ${bad.join("\n  ")}`);
    }
    for (const u of model.layout.units) {
      const host = new Float32Array(u.numel);
      for (const p of u.params) st.readF32(p.name, host.subarray(p.offset, p.offset + p.numel));
      model.k.upload(model.params[u.index], host);
    }
  } finally {
    st.close();
  }
}

/** A model from a HF folder: config.json + model.safetensors (or shards + index). */
export function loadPretrained(k: Kernels, dir: string, opts: DecoderOptions): DecoderLM {
  const path = `${dir}/config.json`;
  const model = createModel(k, readConfigJson(path), path, opts);
  loadWeights(model, dir);
  return model;
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
