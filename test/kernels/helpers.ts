// Test helpers for kernels: a seeded RNG, tensors from host data, and max-difference reports.
import type { Kernels, Tensor } from "../../kernels/index.ts";
export { mulberry32 as rng } from "../../data/rng.ts";

/** n uniform values in [-scale, scale). */
export function randn(r: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

export function tensorF(k: Kernels, shape: number[], data?: Float32Array): Tensor<"f32"> {
  const t = k.alloc(shape, "f32");
  if (data) k.upload(t, data);
  return t;
}

export function tensorI(k: Kernels, data: number[] | Int32Array): Tensor<"i32"> {
  const t = k.alloc([data.length], "i32");
  k.upload(t, Int32Array.from(data));
  return t;
}

/** max |a-b| / (atol + |b|) style check: returns the worst element's normalised error. */
export function maxErr(a: ArrayLike<number>, b: ArrayLike<number>, atol = 1e-6): { err: number; at: number; a: number; b: number } {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let err = 0, at = -1;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]) / (atol + Math.abs(b[i]));
    if (!(e <= err)) {
      err = e;
      at = i;
    }
  }
  return { err, at, a: at >= 0 ? a[at] : 0, b: at >= 0 ? b[at] : 0 };
}

/** Throws a readable message when a and b differ by more than rtol relative (atol floor). */
export function expectClose(name: string, a: ArrayLike<number>, b: ArrayLike<number>, rtol = 1e-4, atol = 1e-5): void {
  const m = maxErr(a, b, atol / rtol);
  if (!(m.err <= rtol)) throw new Error(`${name}: max rel err ${m.err.toExponential(2)} > ${rtol} at [${m.at}]: ${m.a} vs ${m.b}`);
}
