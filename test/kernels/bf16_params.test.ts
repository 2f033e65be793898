// Mixed precision's parameter side (kernels' Bf16Params, FSDP2 param_dtype = bf16): a weight
// inside a loaded compute copy is cast once, at load, and every matmul takes it as it is. Checked
// on both bf16 GEMM paths: the results equal the per-call cast bit for bit (same bf16 numbers, same
// GEMM), and the matmuls really read the copy instead of casting again (oneDNN reads the bits:
// scribbling over the f32 storage changes nothing; emulated reads the f32 storage unrounded).
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { bf16Bits, createCpuKernels, hasBf16Units, roundBf16, type Kernels, type Tensor } from "../../kernels/index.ts";
import { randn, rng, tensorF, tensorI } from "./helpers.ts";

const hasDnn = existsSync("/usr/lib/x86_64-linux-gnu/libdnnl.so.2") && hasBf16Units();
const paths = [["emulated", true], ["onednn", hasDnn]] as const;

/** The matmuls that take a weight: linear forward/backward (with bias), the MLP GEMM in both
 *  transposes, the fused LM head + cross-entropy. Weights are views at offsets into one flat buffer. */
async function matmuls(k: Kernels, flat: Tensor<"f32">): Promise<Float32Array[]> {
  const r = rng(11), N = 7, C = 24, OC = 40, V = 57;
  const w = k.view(flat, 5, [OC, C]), b = k.view(flat, 5 + OC * C, [OC]), lm = k.view(flat, 5 + OC * C + OC, [V, C]);
  const x = tensorF(k, [N, C], randn(r, N * C, 2)), dy = tensorF(k, [N, OC], randn(r, N * OC));
  const y = tensorF(k, [N, OC]), dx = tensorF(k, [N, C]), dw = tensorF(k, [OC, C]), db = tensorF(k, [OC]);
  k.linearForward(y, x, w, b, N, C, OC);
  k.linearBackward(dx, dw, db, dy, x, w, N, C, OC);
  const g1 = tensorF(k, [N, OC]), g2 = tensorF(k, [OC, N]);
  k.gemm(g1, x, w, N, OC, C, false, true, 1, 0); // x W^T
  k.gemm(g2, w, x, OC, N, C, false, true, 1, 0); // W x^T
  const loss = tensorF(k, [1]), dh = tensorF(k, [N, C]), dlm = tensorF(k, [V, C]);
  k.crossEntropyFused(loss, dh, dlm, x, lm, tensorI(k, [3, 1, -100, 56, 0, 9, 9]), N, C, V, 1 / 6);
  return Promise.all([y, dx, dw, db, g1, g2, loss, dh, dlm].map((t) => k.read(t)));
}

/** Parameters already on the bf16 grid (so the bias, added in f32, is the same number either way). */
function flatOf(k: Kernels, n: number): Tensor<"f32"> {
  return tensorF(k, [n], randn(rng(3), n, 0.5).map(roundBf16));
}

const same = (a: Float32Array[], b: Float32Array[]) => a.every((x, i) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(b[i].buffer, b[i].byteOffset, b[i].byteLength)));

describe("bf16 compute copies of parameters", () => {
  for (const [path, ok] of paths) {
    test.skipIf(!ok)(`${path}: matmuls on a loaded copy = the per-call cast, bit for bit; the copy is not cast again`, async () => {
      const k = createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: path });
      const p = k.bf16Params!;
      expect(p.readsBits).toBe(path === "onednn");
      const n = 5 + 40 * 24 + 40 + 57 * 24 + 3;
      const master = flatOf(k, n);
      const perCall = await matmuls(k, master);
      // the FSDP2 cast: master -> bf16 bits -> compute copy (f32 storage of the bf16 values)
      const bits = new Uint16Array(n);
      p.cast(bits, master.host!);
      for (let i = 0; i < n; i += 97) expect(bits[i]).toBe(bf16Bits(master.host![i]));
      const copy = k.alloc([n], "f32");
      p.load(copy, bits);
      for (let i = 0; i < n; i++) expect(copy.host![i]).toBe(roundBf16(master.host![i]));
      const loaded = await matmuls(k, copy);
      expect(loaded.map((x, i) => same([x], [perCall[i]]))).toEqual(perCall.map(() => true));
      // bias (f32 add) and all: the copy is what every op reads; now prove the GEMMs do not cast it
      const w0 = 5, wN = 40 * 24;
      if (path === "onednn") {
        // oneDNN reads the bits: garbage in the f32 storage of the weight does not reach the GEMM
        const keep = copy.host!.slice(w0, w0 + wN);
        copy.host!.fill(1e30, w0, w0 + wN);
        const again = await matmuls(k, copy);
        expect(same([again[4], again[5]], [perCall[4], perCall[5]])).toBe(true); // the two plain GEMMs
        copy.host!.set(keep, w0);
      } else {
        // emulated: the f32 storage is taken as it is (already bf16): an off-grid value is not rounded
        copy.host![w0] += 2 ** -20;
        const again = await matmuls(k, copy);
        expect(same([again[4]], [perCall[4]])).toBe(false);
        copy.host![w0] = roundBf16(master.host![w0]);
      }
      // released: an ordinary buffer again, cast per call
      p.release(copy);
      copy.host![w0] += 2 ** -20; // rounds back to the same bf16
      expect(same(await matmuls(k, copy), perCall)).toBe(true);
    }, 60_000);
  }

  test("loading twice at one place without a release is refused; lengths are checked", () => {
    const k = createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm: "emulated" });
    const p = k.bf16Params!;
    const copy = k.alloc([8], "f32");
    p.load(copy, new Uint16Array(8));
    expect(() => p.load(copy, new Uint16Array(8))).toThrow("a compute copy is already loaded at byte");
    p.release(copy);
    expect(() => p.load(copy, new Uint16Array(7))).toThrow("bf16Params.load dst");
    expect(() => p.cast(new Uint16Array(3), new Float32Array(4))).toThrow("castBf16: 4 f32 values into 3 bf16 slots");
    expect(createCpuKernels({ threads: 1 }).bf16Params).toBeNull(); // f32: no compute copies
  });
});
