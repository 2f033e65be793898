// OpenBLAS through bun:ffi: cblas_sgemm (row-major) and the library's thread count.
// Measured on this machine (PLATFORM.md, docs/bench/kernels.md): 87-92 GFLOP/s on one core at
// 1024^3 versus ~2 GFLOP/s for the best cache-blocked TypeScript, so every matmul goes here.
// Pointers: `ptr(array, byteOffset)` is taken inside each call (JSC may move small typed arrays
// between calls, never during one), so offsets into flat buffers cost no subarray allocation.

import { dlopen, ptr } from "bun:ffi";
import { existsSync } from "node:fs";
import { scaleOnly, type Gemm } from "./gemm.ts";

export const OPENBLAS_DEFAULT_PATH = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0";

const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

const SYMBOLS = {
  cblas_sgemm: {
    args: ["i32", "i32", "i32", "i32", "i32", "i32", "f32", "ptr", "i32", "ptr", "i32", "f32", "ptr", "i32"],
    returns: "void",
  },
  openblas_set_num_threads: { args: ["i32"], returns: "void" },
  openblas_get_num_threads: { args: [], returns: "i32" },
  openblas_get_config: { args: [], returns: "cstring" },
} as const;

export interface Blas extends Gemm {
  readonly path: string;
  readonly config: string;
  threads(): number;
  setThreads(n: number): void;
}

let loaded: Blas | null = null;

/** Load OpenBLAS once per process (the thread count is process-global in OpenBLAS). */
export function loadOpenBlas(path = OPENBLAS_DEFAULT_PATH): Blas {
  if (loaded && loaded.path === path) return loaded;
  if (!existsSync(path)) {
    throw new Error(`kernels/cpu: OpenBLAS not found at ${path}; install the Debian package libopenblas0 (apt-get install libopenblas0)`);
  }
  let lib;
  try {
    lib = dlopen(path, SYMBOLS);
  } catch (e) {
    throw new Error(`kernels/cpu: cannot load OpenBLAS from ${path} (Debian package libopenblas0): ${(e as Error).message}`);
  }
  const s = lib.symbols;
  const cfg = String(s.openblas_get_config());
  loaded = {
    name: "openblas",
    path,
    config: cfg,
    threads: () => s.openblas_get_num_threads(),
    setThreads: (n) => s.openblas_set_num_threads(n),
    sgemm(transA, transB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) {
      if (M === 0 || N === 0) return;
      if (K === 0) return scaleOnly(M, N, beta, C, cOff, ldc); // OpenBLAS skips nothing here reliably
      s.cblas_sgemm(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, M, N, K, alpha,
        ptr(A, aOff * 4), lda, ptr(B, bOff * 4), ldb, beta, ptr(C, cOff * 4), ldc);
    },
  };
  return loaded;
}
