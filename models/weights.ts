// Where a model's first parameter values come from, read a range at a time: a Hugging Face
// folder (ranged reads of safetensors, index json followed, dtype converted on the fly) or the
// seeded random init (per-parameter streams with skip-ahead). A data-parallel shard of a unit's
// flat buffer is a range that crosses parameters; fillUnitRange fills exactly that range, so a
// rank builds its shard without the whole model ever existing in its memory (VeOmni's
// `init_device: meta`), and the values are those of the full load, whatever the world size.
import { SafetensorsFolder } from "../checkpoint/safetensors.ts";
import { ConfigError } from "./config.ts";
import type { DecoderLM } from "./decoder.ts";
import { initParamRange } from "./init.ts";
import { checkpointMismatches, type ParamEntry, type ParamLayout, type UnitLayout } from "./layout.ts";

export interface WeightSource {
  /** for logs: "init(seed 42)" or the folder. */
  readonly what: string;
  /** Fill `out` with elements [from, from + out.length) of parameter `p` (flattened, row-major). */
  read(p: ParamEntry, from: number, out: Float32Array): void;
  close(): void;
}

/** HF `_init_weights` values (init.ts), any range of any parameter. */
export function initSource(seed: number, std: number): WeightSource {
  return { what: `init(seed ${seed}, std ${std})`, read: (p, from, out) => initParamRange(out, p, seed, std, from), close() {} };
}

/** The values a built (not meta) model holds on the host: a plan takes its shards from them. */
export function modelSource(model: DecoderLM): WeightSource {
  const read = (p: ParamEntry, from: number, out: Float32Array) => {
    const h = model.params[p.unit]?.host;
    if (!h) throw new Error(`model ${model.config.modelType}: no host values of unit ${p.unit} to take "${p.name}" from (a meta model needs its WeightSource)`);
    out.set(h.subarray(p.offset + from, p.offset + from + out.length));
  };
  return { what: "the model's parameters", read, close() {} };
}

/** DeepSeek-V3 checkpoints carry num_nextn_predict_layers multi-token-prediction modules as extra
 *  layers after the last decoder layer (model.layers.61.* in the published model); HF's
 *  DeepseekV3ForCausalLM builds no such layer and skips them on load (_keys_to_ignore_on_load_unexpected),
 *  and so do we. */
function mtpLayer(name: string, layout: ParamLayout, modelType: string): boolean {
  if (modelType !== "deepseek_v3") return false;
  const m = /^model\.layers\.(\d+)\./.exec(name);
  return m !== null && !layout.byName.has(name) && !layout.byName.has(`model.layers.${m[1]}.input_layernorm.weight`);
}

/** The weights of a HF folder. Every shape mismatch with the layout is listed before any data is read. */
export function safetensorsSource(dir: string, layout: ParamLayout, tied: boolean, modelType: string): WeightSource {
  const st = new SafetensorsFolder(dir);
  try {
    const shapes = new Map(st.names().filter((n) => !mtpLayer(n, layout, modelType)).map((n) => [n, st.info(n)!.shape]));
    const bad = checkpointMismatches(layout, shapes, tied);
    if (bad.length) throw new ConfigError(`${dir}: checkpoint does not match config.json (model_type ${modelType}), ${bad.length} mismatches:\n  ${bad.join("\n  ")}`);
  } catch (e) {
    st.close();
    throw e;
  }
  return { what: dir, read: (p, from, out) => void st.readF32Range(p.name, from, out), close: () => st.close() };
}

/**
 * Fill `out` with elements [lo, lo + out.length) of unit `u`'s flat buffer (layout.ts: the
 * unit's parameters back to back). Elements past the unit's end (FSDP's padding of the last
 * shard) are zero. Reads only the parameters the range overlaps, and only their overlapping part.
 */
export function fillUnitRange(u: UnitLayout, lo: number, out: Float32Array, src: WeightSource): void {
  const hi = lo + out.length;
  for (const p of u.params) {
    const a = Math.max(lo, p.offset);
    const b = Math.min(hi, p.offset + p.numel);
    if (a < b) src.read(p, a - p.offset, out.subarray(a - lo, b - lo));
  }
  if (hi > u.numel) out.fill(0, Math.max(0, u.numel - lo));
}
