// The fast path's exp approximation against Math.exp over the f32 range softmax uses.
import { expect, test } from "bun:test";
import { fexp } from "../../kernels/cpu/fast/fexp.ts";
import { rng } from "./helpers.ts";

test("fexp: relative error < 1e-11 on [-87, 88], exact edges", () => {
  const r = rng(11);
  let worst = 0;
  for (let i = 0; i < 200_000; i++) {
    const x = -87 + r() * 175;
    const want = Math.exp(x);
    worst = Math.max(worst, Math.abs(fexp(x) - want) / want);
  }
  expect(worst).toBeLessThan(1e-11);
  expect(fexp(0)).toBe(1);
  expect(fexp(-Infinity)).toBe(0);
  expect(fexp(-100)).toBe(0);
  expect(fexp(100)).toBe(Math.exp(100));
  expect(Number.isNaN(fexp(NaN))).toBe(true);
});
