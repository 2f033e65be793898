// crossEntropyFused with dweight aliasing weight (ops.ts): the gradient replaces the weight. On
// every CPU path (reference, fast f32 with several row chunks and vocabulary blocks or with one
// row chunk, whose dW needs no block buffer, fast mixed on both bf16 GEMMs) the loss and dhidden are those of the ordinary call and the weight ends up
// holding what the ordinary call accumulates into a zeroed dweight.
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { createCpuKernels, createReferenceKernels, hasBf16Units, type Kernels } from "../../kernels/index.ts";
import { expectClose, randn, rng, tensorF, tensorI } from "./helpers.ts";

const T = 40, C = 16, V = 9000; // V > 4096: two full vocabulary blocks and a tail
const r = rng(21);
const H0 = randn(r, T * C, 2), W0 = randn(r, V * C, 0.3), DH0 = randn(r, T * C, 0.01);
const targets = Array.from({ length: T }, (_, t) => (t % 9 === 4 ? -100 : Math.floor(r() * V)));

async function ce(k: Kernels, inPlace: boolean, withDh: boolean): Promise<{ loss: number; dh: Float32Array | null; dw: Float32Array }> {
  const hidden = tensorF(k, [T, C], H0), w = tensorF(k, [V, C], W0), loss = tensorF(k, [1]);
  const dh = withDh ? tensorF(k, [T, C], DH0) : null;
  const dw = inPlace ? w : tensorF(k, [V, C]);
  k.crossEntropyFused(loss, dh, dw, hidden, w, tensorI(k, targets), T, C, V, 1 / 37);
  return { loss: (await k.read(loss))[0], dh: dh && (await k.read(dh)), dw: await k.read(dw) };
}

const hasDnn = existsSync("/usr/lib/x86_64-linux-gnu/libdnnl.so.2") && hasBf16Units();
const backends: [string, () => Kernels, number][] = [
  ["reference", () => createReferenceKernels(), 1e-6],
  ["fast f32, 3 row chunks", () => createCpuKernels({ threads: 1, tuning: { attnBR: 64, attnBC: 512, ceChunkFloats: 16 * V } }), 2e-5],
  ["fast f32, 1 row chunk (dW written straight over each vocabulary block)", () => createCpuKernels({ threads: 1 }), 2e-5],
  ["fast mixed emulated", () => createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: "emulated" }), 2e-5],
  ...(hasDnn ? [["fast mixed oneDNN", () => createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: "onednn" }), 2e-5] as [string, () => Kernels, number]] : []),
];

describe("crossEntropyFused, gradient in place of the weight", () => {
  for (const [name, make, tol] of backends) {
    test(`${name}: loss, dhidden as the ordinary call; the weight becomes dW`, async () => {
      const k = make();
      for (const withDh of [true, false]) {
        const want = await ce(k, false, withDh);
        const got = await ce(k, true, withDh);
        expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-6 * Math.abs(want.loss));
        if (withDh) expect(Buffer.from(got.dh!.buffer).equals(Buffer.from(want.dh!.buffer))).toBe(true);
        expectClose(`${name} dW`, got.dw, want.dw, tol, 1e-7);
      }
    });
  }
});
