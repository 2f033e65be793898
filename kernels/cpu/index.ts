// CPU backend constructors: the fast one (default) and the reference one (plain loops, tests).
// The fast backend's pieces are chosen once here, from the CPU's features (/proc/cpuinfo) and
// what is installed, and named in `description` (the startup log):
// - f32 GEMM: oneDNN's dnnl_sgemm when libdnnl.so.2 is present (measured faster than OpenBLAS
//   0.3.21 on every shape class of the models here, docs/bench/kernels.md), else OpenBLAS;
// - mixed precision (`mixedPrecision`, train.enable_mixed_precision): matmuls take bf16 operands
//   with f32 accumulation, on oneDNN's bf16 GEMM where the CPU has bf16 units (AMX or
//   AVX512-BF16), else emulated by rounding the operands and running the f32 GEMM;
// - element-wise loops: native (gcc -O3 -march=native, native/vec.c) or TypeScript;
// - attention: the flash loop nest in C (native/attn.c, threaded over heads) when the native
//   library built and the f32 GEMM is oneDNN (its GEMMs are called from C), else TypeScript blocks.
import { ptr } from "bun:ffi";
import { CpuKernels } from "./backend.ts";
import type { AttnMode } from "./fast/attention.ts";
import { cpuSummary, hasBf16Units } from "./fast/cpu_features.ts";
import { bf16OperandGemm, castBf16, type Bf16Gemm, type Gemm } from "./fast/gemm.ts";
import type { Bf16Params } from "../ops.ts";
import { F } from "./memory.ts";
import { makeFastOps, type FastTuning } from "./fast/index.ts";
import { loadOneDnn, ONEDNN_DEFAULT_PATH } from "./fast/onednn.ts";
import { loadOpenBlas, OPENBLAS_DEFAULT_PATH } from "./fast/openblas.ts";
import { loadNative } from "./native/index.ts";
import { referenceOps } from "./reference/index.ts";

export interface CpuKernelsOptions {
  /** Compute threads (OpenBLAS, OpenMP for oneDNN and the native loops); process-global. */
  threads: number;
  /** Library path; default /usr/lib/x86_64-linux-gnu/libopenblas.so.0 (Debian libopenblas0). */
  blasPath?: string;
  /** oneDNN path; default /usr/lib/x86_64-linux-gnu/libdnnl.so.2 (Debian libdnnl2). */
  dnnlPath?: string;
  /** Block sizes of the fast path (tests and benchmarks only). */
  tuning?: FastTuning;
  /** bf16 GEMM operands, f32 accumulation (train.enable_mixed_precision). Default false (f32). */
  mixedPrecision?: boolean;
  /** The f32 GEMM library: "auto" (oneDNN when present, else OpenBLAS), or one of them. */
  f32Gemm?: "auto" | "openblas" | "onednn";
  /** How mixed-precision GEMMs run: "auto" (oneDNN bf16 where the CPU has bf16 units), or forced. */
  bf16Gemm?: "auto" | "onednn" | "emulated";
  /** false: TypeScript element-wise loops even when the native library builds (tests, benchmarks). */
  native?: boolean;
}

export function createCpuKernels(opts: CpuKernelsOptions): CpuKernels {
  if (!Number.isInteger(opts.threads) || opts.threads < 1) throw new Error(`kernels.threads must be an integer >= 1, got ${opts.threads}`);
  const blas = loadOpenBlas(opts.blasPath ?? OPENBLAS_DEFAULT_PATH);
  blas.setThreads(opts.threads);
  const want = opts.f32Gemm ?? "auto";
  const wantBf16 = opts.bf16Gemm ?? "auto";
  const needDnn = want !== "openblas" || (opts.mixedPrecision && wantBf16 !== "emulated");
  const { dnn, reason: dnnWhy } = needDnn ? loadOneDnn(opts.dnnlPath ?? ONEDNN_DEFAULT_PATH) : { dnn: null, reason: "" };
  if (!dnn && (want === "onednn" || (opts.mixedPrecision && wantBf16 === "onednn"))) {
    throw new Error(`kernels/cpu: oneDNN was asked for but ${dnnWhy}`);
  }
  dnn?.setThreads(opts.threads);
  const f32: Gemm = want === "openblas" || !dnn ? blas : dnn;
  const nat = opts.native === false ? { native: null, reason: "native loops off (TypeScript)" } : loadNative();
  nat.native?.sym.vt_set_threads(opts.threads);
  let mm: Gemm = f32;
  let bf16Dnn = false;
  let params: Bf16Params | null = null;
  if (opts.mixedPrecision) {
    bf16Dnn = dnn !== null && (wantBf16 === "onednn" || (wantBf16 === "auto" && hasBf16Units()));
    const g: Bf16Gemm = bf16OperandGemm(f32, bf16Dnn ? dnn : null, nat.native);
    mm = g;
    const native = nat.native;
    params = {
      readsBits: g.readsBits,
      cast: (bits, src) => castBf16(bits, src, native),
      load: (dst, bits) => g.loadParams(F(dst, "bf16Params.load dst", bits.length), bits),
      release: (dst) => g.releaseParams(F(dst, "bf16Params.release dst", dst.numel)),
    };
  }
  // native attention calls oneDNN from C: only where the f32 GEMM is oneDNN (OpenBLAS-pinned runs keep its sums)
  let attn: AttnMode | null = null;
  if (nat.native && dnn && f32 === dnn && nat.native.sym.vt_attn_init(ptr(new TextEncoder().encode(`${dnn.path}\0`))) === 0) {
    attn = !opts.mixedPrecision ? "f32" : bf16Dnn ? "bf16" : "bf16-emulated";
  }
  const desc = `cpu: ${cpuSummary()}; ${opts.threads} threads; f32 GEMM ${f32.name}${f32 === blas ? ` (${blas.config})` : ""}` +
    `${dnnWhy && !dnn ? ` [${dnnWhy}]` : ""}; matmuls ${opts.mixedPrecision ? mm.name : "f32"}; element-wise: ${nat.reason}; ` +
    `attention: ${attn ? `native flash loops, ${attn} operands` : "TypeScript flash blocks"}`;
  return new CpuKernels(makeFastOps(f32, mm, nat.native, opts.tuning, attn), desc, opts.mixedPrecision ? "bf16" : "f32", params);
}

/** Plain-loop reference backend (no BLAS): the ground truth in parity tests. */
export function createReferenceKernels(): CpuKernels {
  return new CpuKernels(referenceOps, "cpu-reference: plain TypeScript loops", "f32");
}

export { CpuKernels } from "./backend.ts";
export { DEFAULT_TUNING, type FastTuning } from "./fast/index.ts";
export { cpuWrap } from "./memory.ts";
export { referenceOps } from "./reference/index.ts";
export { loadOpenBlas, OPENBLAS_DEFAULT_PATH } from "./fast/openblas.ts";
export { cpuInfo, cpuSummary, hasBf16Units } from "./fast/cpu_features.ts";
export { bf16Bits, roundBf16 } from "./fast/gemm.ts";
