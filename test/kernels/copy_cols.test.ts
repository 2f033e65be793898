// copyCols by its definition (every backend's parity with the reference is in parity.test.ts /
// webgpu_ops.test.ts): the named columns are written, every other element is left alone, and a
// span that does not fit a row is refused naming it.
import { expect, test } from "bun:test";
import { createCpuKernels } from "../../kernels/index.ts";
import { tensorF } from "./helpers.ts";

const k = createCpuKernels({ threads: 1 });

test("copyCols writes dst[n, dstOff + j*dstStride] from src[n, srcOff + j*srcStride], overwrite or accumulate", async () => {
  // src rows [0..5], [10..15]; de-interleave the pairs of columns 2..5 into dst columns 0..3
  const src = tensorF(k, [2, 6], Float32Array.from([0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]));
  const dst = tensorF(k, [2, 5], new Float32Array(10).fill(-1));
  k.copyCols(dst, src, 2, 2, 5, 0, 1, 6, 2, 2, false); // evens 2, 4
  k.copyCols(dst, src, 2, 2, 5, 2, 1, 6, 3, 2, false); // odds 3, 5
  k.copyCols(dst, src, 2, 1, 5, 0, 1, 6, 0, 1, true); // dst[:,0] += src[:,0]
  expect(Array.from(await k.read(dst))).toEqual([2, 4, 3, 5, -1, 22, 14, 13, 15, -1]);
  expect(() => k.copyCols(dst, src, 2, 3, 5, 1, 2, 6, 0, 1, false)).toThrow("copyCols.dst: columns 1 + (width 3 - 1) * stride 2 do not fit a row of 5");
});
