// oneDNN (Debian libdnnl2, libdnnl.so.2) through bun:ffi: its C GEMMs, row-major, int64 sizes,
// 'N'/'T' transposes. dnnl_sgemm is the f32 GEMM; dnnl_gemm_bf16bf16f32 takes bf16 A and B
// (Uint16Array, round-to-nearest-even casts of f32) and accumulates and writes f32, on AMX or
// AVX512-BF16 units. Threads follow OpenMP (libgomp, shared with the native loops):
// omp_set_num_threads from this (the calling) thread.

import { dlopen, ptr } from "bun:ffi";
import { existsSync } from "node:fs";
import { scaleOnly, type Gemm } from "./gemm.ts";
import { ompPassiveBeforeLoad } from "./omp_env.ts";

export const ONEDNN_DEFAULT_PATH = "/usr/lib/x86_64-linux-gnu/libdnnl.so.2";
const GOMP_PATH = "/usr/lib/x86_64-linux-gnu/libgomp.so.1";

const GEMM_ARGS = ["u8", "u8", "i64", "i64", "i64", "f32", "ptr", "i64", "ptr", "i64", "f32", "ptr", "i64"] as const;
const SYMBOLS = {
  dnnl_sgemm: { args: GEMM_ARGS, returns: "i32" },
  dnnl_gemm_bf16bf16f32: { args: GEMM_ARGS, returns: "i32" },
  dnnl_version: { args: [], returns: "ptr" },
} as const;

const N = 78; // 'N'
const T = 84; // 'T'

export interface OneDnn extends Gemm {
  readonly path: string;
  /** C (M,N) <- alpha op(A) op(B) + beta C with A, B bf16 (offsets and leading dims in elements), C f32. */
  gemmBf16(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Uint16Array, aOff: number, lda: number, B: Uint16Array, bOff: number, ldb: number,
    beta: number, C: Float32Array, cOff: number, ldc: number): void;
  setThreads(n: number): void;
}

let loaded: OneDnn | null = null;

/** Load oneDNN once per process; null with a reason when the library is missing. */
export function loadOneDnn(path = ONEDNN_DEFAULT_PATH): { dnn: OneDnn | null; reason: string } {
  if (loaded && loaded.path === path) return { dnn: loaded, reason: "" };
  if (!existsSync(path)) return { dnn: null, reason: `oneDNN not found at ${path} (Debian package libdnnl2)` };
  let s;
  let gomp;
  ompPassiveBeforeLoad();
  try {
    s = dlopen(path, SYMBOLS).symbols;
    gomp = dlopen(GOMP_PATH, { omp_set_num_threads: { args: ["i32"], returns: "void" } }).symbols;
  } catch (e) {
    return { dnn: null, reason: `cannot load oneDNN from ${path}: ${(e as Error).message}` };
  }
  const check = (st: number, what: string) => {
    if (st !== 0) throw new Error(`kernels/cpu: oneDNN ${what} failed with status ${st}`);
  };
  loaded = {
    name: "onednn",
    path,
    setThreads: (n) => gomp.omp_set_num_threads(n),
    sgemm(transA, transB, M, Nn, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) {
      if (M === 0 || Nn === 0) return;
      if (K === 0) return scaleOnly(M, Nn, beta, C, cOff, ldc);
      check(s.dnnl_sgemm(transA ? T : N, transB ? T : N, M, Nn, K, alpha, ptr(A, aOff * 4), lda, ptr(B, bOff * 4), ldb, beta,
        ptr(C, cOff * 4), ldc), "dnnl_sgemm");
    },
    gemmBf16(transA, transB, M, Nn, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) {
      if (M === 0 || Nn === 0) return;
      if (K === 0) return scaleOnly(M, Nn, beta, C, cOff, ldc);
      check(s.dnnl_gemm_bf16bf16f32(transA ? T : N, transB ? T : N, M, Nn, K, alpha, ptr(A, aOff * 2), lda, ptr(B, bOff * 2), ldb,
        beta, ptr(C, cOff * 4), ldc), "dnnl_gemm_bf16bf16f32");
    },
  };
  return { dnn: loaded, reason: "" };
}
