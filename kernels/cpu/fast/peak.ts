// Measured peak FLOP/s of this CPU per matmul dtype: the MFU denominators. f32: FMA chains on the
// widest vectors (native/vec.c vt_peak_f32); bf16: vdpbf16ps chains where the CPU has AVX512-BF16
// without AMX, oneDNN's bf16 GEMM at 2048^3 where it has AMX (tile peaks need a real GEMM),
// else (bf16 emulated on the f32 GEMM) the f32 peak. One thread, best of 3 short runs (~5 ms
// each) timed in this process's CPU time, not wall time: other processes on a shared machine do
// not lower it. The peak of n threads is n times that (cores run independently). Measured once
// per process. Without the native library: 100 GFLOP/s per thread for f32 (the FMA peak of this
// project's first machine, PLATFORM.md) and twice that for bf16.

import { cpuInfo, type CpuInfo } from "./cpu_features.ts";
import { loadOneDnn } from "./onednn.ts";
import { loadNative, type Native } from "../native/index.ts";

const cache = new Map<string, number>();

/** Peak FLOP/s of `threads` cores for matmuls in `dtype`. */
export function peakFlops(threads: number, dtype: "f32" | "bf16"): number {
  let one = cache.get(dtype);
  if (one === undefined) {
    one = measureOneThread(dtype);
    cache.set(dtype, one);
  }
  return one * threads;
}

function best(run: () => number): number {
  let bestRate = 0;
  for (let i = 0; i < 3; i++) {
    const c0 = process.cpuUsage();
    const flops = run();
    const c = process.cpuUsage(c0);
    bestRate = Math.max(bestRate, flops / ((c.user + c.system) / 1e6));
  }
  return bestRate;
}

function measureOneThread(dtype: "f32" | "bf16"): number {
  const { native } = loadNative();
  const cpu = cpuInfo();
  if (!native) return dtype === "bf16" && (cpu.amxBf16 || cpu.avx512bf16) ? 200e9 : 100e9;
  const threads = native.sym.vt_get_threads();
  try {
    native.sym.vt_set_threads(1);
    return measureWith(native, cpu, dtype);
  } finally {
    native.sym.vt_set_threads(threads);
  }
}

function measureWith(native: Native, cpu: CpuInfo, dtype: "f32" | "bf16"): number {
  const f32 = () => best(() => native.sym.vt_peak_f32(2_000_000));
  if (dtype === "f32") return f32();
  if (cpu.amxBf16) {
    const { dnn } = loadOneDnn();
    if (dnn) {
      const n = 2048, a = new Uint16Array(n * n).fill(0x3f80), c = new Float32Array(n * n);
      return best(() => (dnn.gemmBf16(false, false, n, n, n, 1, a, 0, n, a, 0, n, 0, c, 0, n), 2 * n * n * n));
    }
  }
  if (cpu.avx512bf16) return best(() => native.sym.vt_peak_bf16(2_000_000));
  return f32();
}
