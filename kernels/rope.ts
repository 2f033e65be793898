// Rotary-embedding tables, computed on the host exactly as Hugging Face transformers does
// (modeling_rope_utils.py `_compute_default_rope_parameters` / `_compute_llama3_parameters`, and
// LlamaRotaryEmbedding.forward), in f32 arithmetic (each step rounded with Math.fround, as torch
// does in float32). The tables are uploaded once; `ropeForward` indexes them by position id.

export interface RopeScaling {
  /** HF `rope_scaling.rope_type` (older configs: `type`): "default", "llama3" or "yarn". */
  rope_type: "default" | "llama3" | "yarn";
  /** yarn: the effective factor (max_position_embeddings / original_max_position_embeddings when
   *  the config names the original, as HF's _compute_yarn_parameters). */
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
  /** yarn: correction-range rotations (HF defaults 32 / 1) and whether the range is truncated. */
  beta_fast?: number;
  beta_slow?: number;
  truncate?: boolean;
  /** yarn: cos/sin scale, resolved from attention_factor or mscale / mscale_all_dim. */
  attention_factor?: number;
}

export interface RopeOptions {
  /** Rotary dimension: head_dim * partial_rotary_factor (usually head_dim). Must be even. */
  dim: number;
  /** HF `rope_theta` (base). */
  theta: number;
  scaling?: RopeScaling | null;
}

const f = Math.fround;

/** inv_freq (dim/2): 1 / theta^(2i/dim), then llama3 or yarn frequency-dependent scaling if asked. */
export function ropeInvFreq(opts: RopeOptions): Float32Array {
  const { dim, theta } = opts;
  if (dim <= 0 || dim % 2 !== 0) throw new Error(`ropeInvFreq: rotary dim must be even and > 0, got ${dim}`);
  const half = dim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    // torch: arange(0, dim, 2).float() / dim, base ** that, 1.0 / that  (all float32)
    const e = f(f(2 * i) / dim);
    inv[i] = f(1 / f(Math.pow(theta, e)));
  }
  const sc = opts.scaling;
  if (!sc || sc.rope_type === "default") return inv;
  if (sc.rope_type === "yarn") return yarnInvFreq(inv, dim, theta, sc);
  if (sc.rope_type !== "llama3") {
    throw new Error(`ropeInvFreq: rope_scaling.rope_type "${String(sc.rope_type)}" not supported (expected default, llama3 or yarn)`);
  }
  const factor = need(sc.factor, "factor");
  const low = need(sc.low_freq_factor, "low_freq_factor");
  const high = need(sc.high_freq_factor, "high_freq_factor");
  const oldCtx = need(sc.original_max_position_embeddings, "original_max_position_embeddings");
  const lowWavelen = oldCtx / low; // python floats (f64)
  const highWavelen = oldCtx / high;
  for (let i = 0; i < half; i++) {
    const invF = inv[i];
    const wavelen = f((2 * Math.PI) / invF); // python scalar / float32 tensor -> float32
    let v = wavelen > lowWavelen ? f(invF / factor) : invF;
    const smooth = f(f(f(oldCtx / wavelen) - low) / (high - low));
    const smoothed = f(f(f(f(1 - smooth) * v) / factor) + f(smooth * v));
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (medium) v = smoothed;
    inv[i] = v;
  }
  return inv;
}

function need(v: number | undefined, key: string): number {
  if (v === undefined || !Number.isFinite(v)) throw new Error(`ropeInvFreq: rope_scaling.${key} is required for this scaling`);
  return v;
}

/** HF _compute_yarn_parameters: blend of interpolated (1 / (factor * theta^(2i/dim))) and
 *  extrapolated (1 / theta^(2i/dim)) frequencies by a linear ramp over the correction range. */
function yarnInvFreq(extrapolated: Float32Array, dim: number, theta: number, sc: RopeScaling): Float32Array {
  const factor = need(sc.factor, "factor");
  const orig = need(sc.original_max_position_embeddings, "original_max_position_embeddings");
  const betaFast = sc.beta_fast ?? 32, betaSlow = sc.beta_slow ?? 1;
  const corrDim = (rot: number) => (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = corrDim(betaFast), high = corrDim(betaSlow);
  if (sc.truncate ?? true) [low, high] = [Math.floor(low), Math.ceil(high)];
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001; // HF: prevent singularity
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const pos = f(Math.pow(theta, f(f(2 * i) / dim))); // base ** (arange(0, dim, 2).float() / dim), f32
    const interp = f(1 / f(factor * pos));
    const ramp = Math.min(1, Math.max(0, f(f(i - low) / f(high - low))));
    const extraFactor = f(1 - ramp);
    out[i] = f(f(interp * f(1 - extraFactor)) + f(extrapolated[i] * extraFactor));
  }
  return out;
}

/** cos, sin (P, dim/2): angle p * inv_freq[i] rounded to f32 (HF's f32 matmul), then cos/sin * attentionScaling. */
export function ropeCosSin(invFreq: Float32Array, maxPositions: number, attentionScaling = 1): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const a = f(p * invFreq[i]);
      cos[p * half + i] = Math.cos(a) * attentionScaling;
      sin[p * half + i] = Math.sin(a) * attentionScaling;
    }
  }
  return { cos, sin };
}

/**
 * Rotary tables with frequency sections, one row per TOKEN (not per position): for each token t
 * and frequency i in section s (sections partition the inv_freq entries in order),
 * angle = positions[s][t] * invFreq[i] rounded to f32; cos/sin (T, invFreq.length). Apply with
 * `ropeForward` and positions 0..T-1.
 *  - M-RoPE (Qwen2-VL text, HF apply_multimodal_rotary_pos_emb): invFreq of head_dim, sections =
 *    rope_scaling.mrope_section over the (temporal, height, width) position ids.
 *  - 2-D vision rotary (HF VisionRotaryEmbedding(head_dim/2) + rot_pos_emb): invFreq = the
 *    head_dim/4 frequencies twice, sections [head_dim/4, head_dim/4] over the (h, w) ids.
 */
export function sectionedCosSin(invFreq: Float32Array, positions: readonly Int32Array[], sections: readonly number[]): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  if (sections.length !== positions.length || sections.reduce((a, b) => a + b, 0) !== half) {
    throw new Error(`sectionedCosSin: sections [${sections}] must sum to ${half} frequencies and match ${positions.length} position rows`);
  }
  const T = positions[0]?.length ?? 0;
  const cos = new Float32Array(T * half);
  const sin = new Float32Array(T * half);
  let i0 = 0;
  sections.forEach((n, s) => {
    const pos = positions[s];
    if (pos.length !== T) throw new Error(`sectionedCosSin: position row ${s} has ${pos.length} entries, expected ${T}`);
    for (let t = 0; t < T; t++) {
      for (let i = i0; i < i0 + n; i++) {
        const a = f(pos[t] * invFreq[i]);
        cos[t * half + i] = Math.cos(a);
        sin[t * half + i] = Math.sin(a);
      }
    }
    i0 += n;
  });
  return { cos, sin };
}
