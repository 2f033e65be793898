// The fast cross-entropy's logits chunk Z (R,V) taken from a ScratchLender (Kernels.lendScratch:
// FSDP lends its idle gather-buffer ranges): borrowed once per call for R*V floats and given
// back before the call returns; loss, dhidden and dW (ordinary and in place) are bitwise those of
// the kernel's own scratch, whatever the lent memory held; without a free range, its own array.
import { expect, test } from "bun:test";
import { createCpuKernels, type Kernels, type ScratchLender } from "../../kernels/index.ts";
import { randn, rng, tensorF, tensorI } from "./helpers.ts";

const T = 24, C = 32, V = 5000;
const r = rng(5);
const H0 = randn(r, T * C, 1), W0 = randn(r, V * C, 0.3), DH0 = randn(r, T * C, 0.01);
const targets = Array.from({ length: T }, (_, t) => (t % 7 === 3 ? -100 : Math.floor(r() * V)));
const nValid = targets.filter((t) => t !== -100).length;

async function run(k: Kernels, inPlace: boolean): Promise<Buffer[]> {
  const hidden = tensorF(k, [T, C], H0), w = tensorF(k, [V, C], W0), loss = tensorF(k, [1]), dh = tensorF(k, [T, C], DH0);
  const dw = inPlace ? w : tensorF(k, [V, C]);
  k.crossEntropyFused(loss, dh, dw, hidden, w, tensorI(k, targets), T, C, V, 1 / 19);
  return [loss, dh, dw].map((t) => Buffer.from(new Uint8Array((t.host as Float32Array).slice().buffer)));
}

/** Lends ranges of one NaN-filled block; counts what was asked. */
function lender(floats: number) {
  const mem = new Float32Array(new SharedArrayBuffer(floats * 4)).fill(NaN);
  const asked: number[] = [];
  let out = 0;
  const l: ScratchLender = {
    borrow(n) {
      asked.push(n);
      if (n > floats || out > 0) return null;
      out++;
      return mem.subarray(0, n).fill(NaN);
    },
    giveBack() { out--; },
  };
  return { l, asked, out: () => out };
}

for (const mixed of [false, true]) {
  test(`${mixed ? "mixed" : "f32"}: a lent logits chunk gives bitwise the kernel's own results, and is given back`, async () => {
    const make = () => createCpuKernels({ threads: 1, ...(mixed ? { mixedPrecision: true, bf16Gemm: "emulated" as const } : {}) });
    for (const inPlace of [false, true]) {
      const own = await run(make(), inPlace);
      const k = make();
      const big = lender(nValid * V);
      k.lendScratch!(big.l);
      const lent = await run(k, inPlace);
      expect(big.asked).toEqual([nValid * V]); // R = nValid rows of V logits, once per call
      expect(big.out()).toBe(0);
      expect(lent.map((b, i) => b.equals(own[i]))).toEqual([true, true, true]);
      const small = lender(V); // no range long enough: the kernel's own array
      k.lendScratch!(small.l);
      expect((await run(k, inPlace)).map((b, i) => b.equals(own[i]))).toEqual([true, true, true]);
      expect(small.asked).toEqual([nValid * V]);
    }
  });
}
