// WebGPU backend vs the plain CPU reference, through the Kernels contract: forward outputs and
// accumulated gradients of every op (gradient outputs start non-zero, so += is checked too).
// Runs on whatever adapter Dawn gives: Mesa lavapipe in CI, a real GPU elsewhere. Shapes are
// small but cross every tile edge (128x128 GEMM tiles, 16-token attention blocks, B=8 and B=16
// backward tiles, several cross-entropy chunks).
//
// Tolerance, f32 (stated once): rtol 1e-4 with atol 1e-5; the GPU sums in a different (fixed) order.
// f16 variants (inputs rounded to f16 in shared memory, f32 accumulation): max |err| <= 1e-2 * max |ref|.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createReferenceKernels } from "../../kernels/index.ts";
import { createWebGpuKernels, probeAdapter, type WebgpuKernels } from "../../kernels/webgpu/index.ts";
import { MATMUL_VARIANTS, type MatmulVariant } from "../../kernels/webgpu/matmul.ts";
import { adamwCase, attnCase, copyColsCase, crossEntropyCase, embeddingCase, gemmCase, geluCase, layernormCase, LLAMA3_ROPE, groupedGemmCase, moeCombineCase, ropeCase, swigluCase, type Case } from "./cases.ts";
import { expectClose, randn, rng, tensorF, tensorI } from "./helpers.ts";

setDefaultTimeout(60_000); // lavapipe on 2 shared cores: pipelines compile on first use
const RTOL = 1e-4;
const ATOL = 1e-5;

const probe = await probeAdapter();
const ref = createReferenceKernels();
let gpu: WebgpuKernels | null = null;
if (probe.ok) gpu = await createWebGpuKernels({ tuning: { xentChunkElems: 37 * 7 } });

async function parity(name: string, run: Case, rtol = RTOL, atol = ATOL): Promise<void> {
  const k = gpu!;
  const a = await run(ref), b = await run(k);
  expect(Object.keys(b)).toEqual(Object.keys(a));
  for (const key of Object.keys(a)) expectClose(`${name}.${key}`, await k.read(b[key]!), await ref.read(a[key]!), rtol, atol);
}

test("webgpu: adapter is a real backend, never Dawn's Null backend", () => {
  if (!probe.ok && probe.nullBackend) throw new Error(`webgpu: ${probe.reason}`);
  if (!probe.ok) return; // no adapter at all: reported by the SKIPPED test below
  expect(probe.adapter.backendType).not.toBe(1);
  expect(probe.adapter.backend).not.toBe("Null");
  console.log(gpu!.description);
});

if (!probe.ok) {
  test(`webgpu: SKIPPED, no adapter: ${probe.reason}`, () => {
    console.warn(`webgpu: SKIPPED, no adapter: ${probe.reason}`);
  });
} else {
  describe("webgpu matches the CPU reference", () => {
    test("gemm, all transposes, alpha/beta, tile edges; beta=0 ignores NaN", async () => {
      for (const [M, N, K] of [[7, 5, 9], [130, 133, 19]] as const) {
        for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
          await parity(`gemm(${M},${N},${K},${ta},${tb})`, gemmCase(M, N, K, ta, tb));
        }
      }
    });

    // t64 is t128's source with other tile constants; lavapipe's LLVM needs ~7 s CPU to compile it,
    // so on a software adapter it runs only with VEOMNI_WEBGPU_FULL=1 (always on a real GPU).
    const full = gpu!.rt.ctx.adapter.isHardware || Bun.env.VEOMNI_WEBGPU_FULL === "1";
    test(`matmul variants t128, t16${full ? ", t64" : ""} in f32 and t128h with the f16 tolerance, across tile edges`, async () => {
      const M = 131, N = 70, K = 45;
      const r = rng(11);
      const a = randn(r, M * K), b = randn(r, N * K);
      const want = await ref.read((() => {
        const o = tensorF(ref, [M, N]);
        ref.gemm(o, tensorF(ref, [M, K], a), tensorF(ref, [N, K], b), M, N, K, false, true, 1, 0);
        return o;
      })());
      for (const variant of Object.keys(MATMUL_VARIANTS) as MatmulVariant[]) {
        if ((variant === "t128h" && !gpu!.rt.ctx.f16) || (variant === "t64" && !full)) continue;
        const k = await createWebGpuKernels({ tuning: { matmul: variant } });
        const o = tensorF(k, [M, N]);
        k.gemm(o, tensorF(k, [M, K], a), tensorF(k, [N, K], b), M, N, K, false, true, 1, 0);
        const got = await k.read(o);
        if (variant === "t128h") {
          const peak = Math.max(...Array.from(want, Math.abs));
          let worst = 0;
          for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
          expect(worst).toBeLessThanOrEqual(1e-2 * peak);
          expect(worst).toBeGreaterThan(0); // it really rounded through f16
        } else {
          expectClose(`gemm ${variant}`, got, want, RTOL, ATOL);
        }
      }
    });

    test("linear forward/backward with and without bias, on unaligned views", async () => {
      for (const withBias of [true, false]) {
        await parity(`linear(bias=${withBias})`, async (k) => {
          const r = rng(2), N = 6, C = 10, OC = 7;
          const flat = tensorF(k, [3 + OC * C], randn(r, 3 + OC * C));
          const inp = tensorF(k, [N, C], randn(r, N * C)), w = k.view(flat, 3, [OC, C]);
          const b = withBias ? tensorF(k, [OC], randn(r, OC)) : null;
          const out = tensorF(k, [N, OC]);
          k.linearForward(out, inp, w, b, N, C, OC);
          const dout = tensorF(k, [N, OC], randn(r, N * OC));
          const dinp = tensorF(k, [N, C], randn(r, N * C)), dw = tensorF(k, [OC, C], randn(r, OC * C)), db = tensorF(k, [OC], randn(r, OC));
          k.linearBackward(dinp, dw, withBias ? db : null, dout, inp, w, N, C, OC);
          // many rows: the bias gradient's column sums run in several row chunks
          const N2 = 700, db2 = tensorF(k, [OC], randn(r, OC));
          k.linearBackward(null, null, db2, tensorF(k, [N2, OC], randn(r, N2 * OC)), tensorF(k, [N2, C]), w, N2, C, OC);
          return { out, dinp, dw, db, db2 };
        });
      }
    });

    test("embedding gather / scatter-add with repeated ids; a bad id throws at the next sync point", async () => {
      await parity("embedding", embeddingCase);
      const k = gpu!;
      const out = k.alloc([2, 3]);
      k.embeddingForward(out, tensorI(k, [1, 7]), tensorF(k, [4, 3]), 2, 3, 4);
      await expect(k.sync()).rejects.toThrow(/token id 7 outside/);
      await k.sync(); // the error is reported once, then cleared
    });

    test("rmsnorm forward/backward (rows wider than a workgroup) and in place", async () => {
      await parity("rmsnorm", async (k) => {
        const r = rng(4), N = 5, C = 300;
        const inp = tensorF(k, [N, C], randn(r, N * C, 3)), w = tensorF(k, [C], randn(r, C));
        const out = tensorF(k, [N, C]), rstd = tensorF(k, [N]);
        k.rmsnormForward(out, rstd, inp, w, N, C, 1e-6);
        const dinp = tensorF(k, [N, C], randn(r, N * C)), dw = tensorF(k, [C], randn(r, C));
        k.rmsnormBackward(dinp, dw, tensorF(k, [N, C], randn(r, N * C)), inp, w, rstd, N, C);
        const inplace = tensorF(k, [N, C], randn(r, N * C)), rstd2 = tensorF(k, [N]);
        k.rmsnormForward(inplace, rstd2, inplace, w, N, C, 1e-5);
        // many rows, narrow: the weight gradient's column sums run in several row chunks
        const N2 = 1000, C2 = 6;
        const x2 = tensorF(k, [N2, C2], randn(r, N2 * C2)), w2 = tensorF(k, [C2], randn(r, C2));
        const o2 = tensorF(k, [N2, C2]), rs2 = tensorF(k, [N2]), dx2 = tensorF(k, [N2, C2]), dw2 = tensorF(k, [C2], randn(r, C2));
        k.rmsnormForward(o2, rs2, x2, w2, N2, C2, 1e-6);
        k.rmsnormBackward(dx2, dw2, tensorF(k, [N2, C2], randn(r, N2 * C2)), x2, w2, rs2, N2, C2);
        return { out, rstd, dinp, dw, inplace, rstd2, o2, dx2, dw2 };
      });
    });

    test("rope forward/backward with restarting positions (default and llama3 tables), in place", async () => {
      for (const scaling of [null, LLAMA3_ROPE]) await parity(`rope(${scaling ? "llama3" : "default"})`, ropeCase(scaling, true));
    });

    test("attention: GQA over packed samples (incl. empty and 1-token), several 16-token blocks", async () => {
      await parity("attention(GQA 4/2, HS 8)", attnCase(4, 2, [0, 37, 38, 38, 90], 8, 20));
    });
    test("attention: MQA with HS 40 (B=16 tiles) and MHA with HS 128 (B=8 tiles)", async () => {
      await parity("attention(MQA 3/1, HS 40)", attnCase(3, 1, [0, 20, 33], 40, 50));
      await parity("attention(MHA 2/2, HS 128)", attnCase(2, 2, [0, 9, 30], 128, 138));
    });

    test("attention, full within each sample (vision): empty and 1-token samples; B=16 and B=8 tiles", async () => {
      await parity("attention(full, GQA 4/2, HS 8)", attnCase(4, 2, [0, 37, 38, 38, 90], 8, 21, false));
      await parity("attention(full, MHA 2/2, HS 128)", attnCase(2, 2, [0, 9, 30], 128, 139, false));
    });

    test("layernorm forward/backward (rows wider than a workgroup; null dweight/dbias)", async () => {
      await parity("layernorm(C=40)", layernormCase(70, 40));
      await parity("layernorm(C=300)", layernormCase(3, 300));
    });

    test("gelu exact (erf to 1.5e-7) and quick_gelu forward/backward", async () => {
      await parity("gelu", geluCase(1000, "gelu"), RTOL, 1e-6);
      await parity("quick_gelu", geluCase(1000, "quick_gelu"));
    });

    test("swiglu forward/backward", async () => {
      await parity("swiglu", swigluCase(333));
    });

    test("copyCols: strided split/join, accumulate and overwrite", async () => {
      await parity("copyCols", copyColsCase(300));
    });

    test("moe combine forward/backward (more than one workgroup of rows and of routes)", async () => {
      await parity("moeCombine", moeCombineCase(70, 4, 13));
    });

    test("grouped GEMM, every expert group in one dispatch (an empty group, one over a 16-row tile), every transpose", async () => {
      await parity("groupedGemm", groupedGemmCase);
    });

    test("fused LM head + cross-entropy in row chunks, ignore_index -100; a bad target throws", async () => {
      await parity("crossEntropyFused", crossEntropyCase);
      const k = gpu!;
      k.crossEntropyFused(k.alloc([1]), null, null, tensorF(k, [2, 3]), tensorF(k, [5, 3]), tensorI(k, [1, 5]), 2, 3, 5, 1);
      await expect(k.sync()).rejects.toThrow(/target 5 outside/);
    });

    test("sumSquares and AdamW (3 steps, weight decay, grad scale)", async () => {
      await parity("adamw", adamwCase(10001));
    });

    test("staging: a collective's round trip (readInto a shared host array, reduce there, upload back)", async () => {
      const k = gpu!;
      const flat = tensorF(k, [40], Float32Array.from({ length: 40 }, (_, i) => i));
      const grads = k.view(flat, 3, [30]);
      const host = new Float32Array(new SharedArrayBuffer(30 * 4));
      for (let round = 0; round < 3; round++) {
        k.scale(grads, 2);                         // the step's producer
        await k.rt.readInto(grads as never, host);  // SYNC POINT (staging)
        for (let i = 0; i < 30; i++) host[i]! += 1; // stands in for the all-reduce on the host buffer
        k.upload(grads, host);
      }
      const want = Float32Array.from({ length: 40 }, (_, i) => (i >= 3 && i < 33 ? ((i * 2 + 1) * 2 + 1) * 2 + 1 : i));
      expect([...(await k.read(flat))]).toEqual([...want]);
      await expect(k.rt.readInto(grads as never, new Float32Array(29))).rejects.toThrow(/host array of 29 for 30/);
    });

    test("elementwise: add (also in place), scale, axpy, copy, fill, zero on views; i32 copy/fill", async () => {
      await parity("elementwise", async (k) => {
        const r = rng(10);
        const flat = tensorF(k, [30], randn(r, 30));
        const a = k.view(flat, 0, [10]), b = k.view(flat, 10, [10]), c = k.view(flat, 20, [2, 5]);
        k.add(c, a, b);
        k.scale(a, 3);
        k.axpy(b, -0.5, c);
        const d = tensorF(k, [10]);
        k.copy(d, c);
        k.add(d, d, a);
        k.fill(k.view(c, 3, [2]), 7);
        k.zero(k.view(flat, 0, [2]));
        return { flat, d };
      }, 1e-6, 1e-7);
      const k = gpu!;
      const ids = tensorI(k, [5, -3, 7]), ids2 = k.alloc([3], "i32");
      k.copy(ids2, ids);
      k.fill(k.view(ids2, 2, [1]), -100);
      expect([...(await k.read(ids2))]).toEqual([5, -3, -100]);
    });
  });
}
