// Grouped SwiGLU experts (kernels/grouped_gemm.ts, over Kernels.groupedGemm) against the plain per-expert, per-row loop
// (written here in f64, as HF's expert loop computes each routed token), forward and backward,
// on the fast CPU backend, the reference backend and WebGPU when an adapter exists. Expert 2 gets
// no rows (it must cost nothing and leave its gradients alone); gradients start non-zero (+=).
import { describe, expect, test } from "bun:test";
import { createCpuKernels, createReferenceKernels, GROUP_ROWS, groupedSwigluBackward, groupedSwigluForward, type Kernels } from "../../kernels/index.ts";
import { createWebGpuKernels, probeAdapter } from "../../kernels/webgpu/index.ts";
import { expectClose, randn, rng, tensorF, tensorI } from "./helpers.ts";

const E = 4, C = 6, I = 5;
const off = Int32Array.from([0, 3, 7, 7, 12]); // rows per expert 3, 4, 0, 5
const R = off[E];

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** The per-row loop: y_r = Wd_e (silu(Wg_e x_r) * (Wu_e x_r)), and its hand-written backward. */
function loopReference(x: Float32Array, wgu: Float32Array, wd: Float32Array, dy: Float32Array, dwgu0: Float32Array, dwd0: Float32Array, dx0: Float32Array) {
  const y = new Float64Array(R * C), dx = Float64Array.from(dx0), dwgu = Float64Array.from(dwgu0), dwd = Float64Array.from(dwd0);
  for (let e = 0; e < E; e++) {
    for (let r = off[e]; r < off[e + 1]; r++) {
      const g = new Float64Array(I), u = new Float64Array(I), h = new Float64Array(I);
      for (let i = 0; i < I; i++) {
        for (let c = 0; c < C; c++) {
          g[i] += wgu[(e * 2 * I + i) * C + c] * x[r * C + c];
          u[i] += wgu[(e * 2 * I + I + i) * C + c] * x[r * C + c];
        }
        h[i] = silu(g[i]) * u[i];
      }
      for (let c = 0; c < C; c++) for (let i = 0; i < I; i++) y[r * C + c] += wd[(e * C + c) * I + i] * h[i];
      const dh = new Float64Array(I);
      for (let c = 0; c < C; c++) {
        for (let i = 0; i < I; i++) {
          dwd[(e * C + c) * I + i] += dy[r * C + c] * h[i];
          dh[i] += wd[(e * C + c) * I + i] * dy[r * C + c];
        }
      }
      for (let i = 0; i < I; i++) {
        const sg = 1 / (1 + Math.exp(-g[i]));
        const dg = dh[i] * u[i] * sg * (1 + g[i] * (1 - sg)), du = dh[i] * silu(g[i]);
        for (let c = 0; c < C; c++) {
          dwgu[(e * 2 * I + i) * C + c] += dg * x[r * C + c];
          dwgu[(e * 2 * I + I + i) * C + c] += du * x[r * C + c];
          dx[r * C + c] += dg * wgu[(e * 2 * I + i) * C + c] + du * wgu[(e * 2 * I + I + i) * C + c];
        }
      }
    }
  }
  return { y, dx, dwgu, dwd };
}

async function check(k: Kernels): Promise<void> {
  const r = rng(21);
  const x = randn(r, R * C), wgu = randn(r, E * 2 * I * C), wd = randn(r, E * C * I), dy = randn(r, R * C);
  const dwgu0 = randn(r, E * 2 * I * C), dwd0 = randn(r, E * C * I), dx0 = randn(r, R * C);
  const want = loopReference(x, wgu, wd, dy, dwgu0, dwd0, dx0);
  const xs = tensorF(k, [R, C], x), W = tensorF(k, [E * 2 * I * C], wgu), Wd = tensorF(k, [E * C * I], wd);
  const ys = tensorF(k, [R, C], new Float32Array(R * C).fill(NaN)), gu = tensorF(k, [2 * I * R]);
  const scratch = { h: tensorF(k, [I * R]), dh: tensorF(k, [I * R]), dgu: tensorF(k, [2 * I * R]) };
  groupedSwigluForward(k, ys, gu, xs, W, Wd, off, E, C, I, scratch.h);
  expectClose("ys", await k.read(ys), Float32Array.from(want.y));
  const dxs = tensorF(k, [R, C], dx0), dW = tensorF(k, [E * 2 * I * C], dwgu0), dWd = tensorF(k, [E * C * I], dwd0);
  groupedSwigluBackward(k, dxs, dW, dWd, tensorF(k, [R, C], dy), xs, gu, W, Wd, off, E, C, I, scratch);
  expectClose("dxs", await k.read(dxs), Float32Array.from(want.dx));
  expectClose("dwgu", await k.read(dW), Float32Array.from(want.dwgu));
  expectClose("dwd", await k.read(dWd), Float32Array.from(want.dwd));
  // expert 2 had no rows: its gradient blocks are exactly what they were
  expect(Array.from((await k.read(dW)).subarray(2 * 2 * I * C, 3 * 2 * I * C))).toEqual(Array.from(dwgu0.subarray(2 * 2 * I * C, 3 * 2 * I * C)));
}

describe("grouped SwiGLU experts = the per-expert row loop", () => {
  test("fast CPU (OpenBLAS GEMM)", async () => check(createCpuKernels({ threads: 1 })));
  test("reference CPU", async () => check(createReferenceKernels()));
  test("webgpu (when an adapter exists)", async () => {
    const probe = await probeAdapter();
    if (!probe.ok) return console.warn(`webgpu: SKIPPED, no adapter: ${probe.reason}`);
    const k = await createWebGpuKernels();
    await check(k);
    // every expert in one dispatch per GEMM: forward = gate/up GEMM + SwiGLU + down GEMM, whatever E
    const t = (n: number) => tensorF(k, [n]);
    const before = k.rt.stats.dispatches;
    groupedSwigluForward(k, t(R * C), t(2 * I * R), t(R * C), t(E * 2 * I * C), t(E * C * I), off, E, C, I, t(I * R));
    expect(k.rt.stats.dispatches - before).toBe(3);
  }, 60_000);
  test("groupedGemm refuses offsets and extents that do not fit, naming the group", () => {
    const k = createReferenceKernels();
    const g = { E: 2, M: GROUP_ROWS, N: 3, K: 2, transA: false, transB: false, alpha: 1, beta: 0,
      out: { perExpert: 0, perRow: 3, ld: 3 }, a: { perExpert: 0, perRow: 2, ld: 2 }, b: { perExpert: 6, perRow: 0, ld: 3 } };
    const run = (off: number[], outN: number, most = 9) => k.groupedGemm(tensorF(k, [outN]), tensorF(k, [10]), tensorF(k, [12]), tensorI(k, off), most, g);
    run([0, 2, 5], 15); // fits: 5 rows of (.,3), a (5,2), b 2 x (2,3)
    expect(() => run([0, 2, 5], 14)).toThrow("groupedGemm: group 1 (3 rows) reaches element 14 of out, which has 14");
    expect(() => run([0, 3, 2], 15)).toThrow("groupedGemm: offsets decrease at group 1");
    expect(() => run([0, 2, 5], 15, 2)).toThrow("groupedGemm: group 1 has 3 rows, more than maxRows 2");
    expect(() => run([1, 2, 5], 15)).toThrow("groupedGemm: off[0] must be 0, got 1");
  });

  test("bad offsets are refused naming the expectation", () => {
    const k = createReferenceKernels();
    const t = (n: number) => tensorF(k, [n]);
    expect(() => groupedSwigluForward(k, t(R * C), t(2 * I * R), t(R * C), t(E * 2 * I * C), t(E * C * I), Int32Array.from([0, 3, 2, 7, 12]), E, C, I, t(I * R)))
      .toThrow("groupedSwiglu: offsets decrease at expert 1");
    expect(() => groupedSwigluForward(k, t(R * C), t(2 * I * R), t(R * C), t(E * 2 * I * C), t(E * C * I), Int32Array.from([0, 3, 7, 12]), E, C, I, t(I * R)))
      .toThrow("offsets must have E+1=5 entries");
  });
});
