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
  if (p.init === "zeros") return void out.fill(0);
  if (p.init === "ones") return void out.fill(1);
  const rand = mulberry32((seed ^ fnv1a(p.name)) >>> 0);
  // Box-Muller, two normals per pair of uniforms.
  for (let i = 0; i < out.length; i += 2) {
    const u1 = 1 - rand();
    const r = std * Math.sqrt(-2 * Math.log(u1));
    const th = 2 * Math.PI * rand();
    out[i] = r * Math.cos(th);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(th);
  }
}
