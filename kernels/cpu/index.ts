// CPU backend constructors: the fast one (default) and the reference one (plain loops, tests).
import { CpuKernels } from "./backend.ts";
import { makeFastOps, type FastTuning } from "./fast/index.ts";
import { loadOpenBlas, OPENBLAS_DEFAULT_PATH } from "./fast/openblas.ts";
import { referenceOps } from "./reference/index.ts";

export interface CpuKernelsOptions {
  /** OpenBLAS threads (openblas_set_num_threads); process-global. */
  threads: number;
  /** Library path; default /usr/lib/x86_64-linux-gnu/libopenblas.so.0 (Debian libopenblas0). */
  blasPath?: string;
  /** Block sizes of the fast path (tests and benchmarks only). */
  tuning?: FastTuning;
}

export function createCpuKernels(opts: CpuKernelsOptions): CpuKernels {
  if (!Number.isInteger(opts.threads) || opts.threads < 1) throw new Error(`kernels.threads must be an integer >= 1, got ${opts.threads}`);
  const blas = loadOpenBlas(opts.blasPath ?? OPENBLAS_DEFAULT_PATH);
  blas.setThreads(opts.threads);
  const desc = `cpu: ${blas.config} (${blas.path}), ${blas.threads()} BLAS threads`;
  return new CpuKernels(makeFastOps(blas, opts.tuning), desc);
}

/** Plain-loop reference backend (no BLAS): the ground truth in parity tests. */
export function createReferenceKernels(): CpuKernels {
  return new CpuKernels(referenceOps, "cpu-reference: plain TypeScript loops");
}

export { CpuKernels } from "./backend.ts";
export { DEFAULT_TUNING, type FastTuning } from "./fast/index.ts";
export { cpuWrap } from "./memory.ts";
export { referenceOps } from "./reference/index.ts";
export { loadOpenBlas, OPENBLAS_DEFAULT_PATH } from "./fast/openblas.ts";
