// Random initialisation from a config alone (pretraining from scratch), as HF `_init_weights`:
// normal(0, initializer_range) for linear and embedding weights, zeros for biases, ones for norms.
// Seeded and per-parameter: each parameter's stream depends only on (seed, name), so the values
// do not depend on the layout, the unit order or how a mesh shards them.
import { mulberry32 } from "../data/rng.ts";
import type { ParamEntry } from "./layout.ts";

/** 32-bit FNV-1a of a string. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Fill `out` (the parameter's values) per its init kind. */
export function initParam(out: Float32Array, p: ParamEntry, seed: number, std: number): void {
  initParamRange(out, p, seed, std, 0);
}

/**
 * Fill `out` with elements [from, from + out.length) of the parameter's init values, equal to
 * the same elements of initParam's full fill (a rank initialises only its shard). Normals come
 * in Box-Muller pairs from uniforms 2j, 2j+1 of the parameter's stream: element i is pair
 * j = floor(i / 2), cos for even i, sin for odd; the stream skips to pair floor(from / 2).
 */
export function initParamRange(out: Float32Array, p: ParamEntry, seed: number, std: number, from: number): void {
  if (from < 0 || from + out.length > p.numel) throw new Error(`init ${p.name}: range [${from}, ${from + out.length}) is outside its ${p.numel} elements`);
  if (p.init === "zeros") return void out.fill(0);
  if (p.init === "ones") return void out.fill(1);
  const j0 = from >> 1;
  const rand = mulberry32((seed ^ fnv1a(p.name)) >>> 0, 2 * j0);
  const end = from + out.length;
  for (let i = 2 * j0; i < end; i += 2) {
    const u1 = 1 - rand();
    const r = std * Math.sqrt(-2 * Math.log(u1));
    const th = 2 * Math.PI * rand();
    if (i >= from) out[i - from] = r * Math.cos(th);
    if (i + 1 < end) out[i + 1 - from] = r * Math.sin(th);
  }
}
