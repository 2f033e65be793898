// kernels/: the tensor + op contract and its backends. Import kernels only through this file.
//
//   const k = await createKernels({ backend: "cpu", threads: 1 });
//   const flat = k.alloc([nParams]);                 // one flat f32 buffer (shared on cpu)
//   const wq = k.view(flat, off, [C, C]);            // named views into it
//   k.linearForward(q, x, wq, null, T, C, C);        // ops enqueue and return
//   const loss = await k.read(lossBuf);              // labelled sync point

import type { Kernels } from "./ops.ts";
import { createCpuKernels } from "./cpu/index.ts";

export type { AdamWParams, AllocOptions, Bf16Params, GeluKind, GroupedGemmSpec, GroupLayout, Kernels, ScratchLender } from "./ops.ts";
export { GROUP_ROWS } from "./ops.ts";
export type { BackendName, DType, HostArray, Storage, Tensor } from "./tensor.ts";
export { DTYPE_BYTES, expectTensor, numelOf, shapeStr } from "./tensor.ts";
export { ropeCosSin, ropeInvFreq, sectionedCosSin, type RopeOptions, type RopeScaling } from "./rope.ts";
export { lrAt, type LrDecayStyle, type LrScheduleOptions } from "./lr_schedule.ts";
export { clipCoefficient, shiftLabels } from "./optim.ts";
export { groupedSwigluBackward, groupedSwigluForward, type GroupedSwigluScratch } from "./grouped_gemm.ts";
export { peakFlops } from "./cpu/fast/peak.ts";
export { bf16Bits, cpuInfo, cpuSummary, createCpuKernels, createReferenceKernels, cpuWrap, DEFAULT_TUNING, hasBf16Units, OPENBLAS_DEFAULT_PATH, roundBf16, type FastTuning } from "./cpu/index.ts";

export interface KernelsOptions {
  /** "auto": webgpu when the adapter is a hardware GPU, cpu otherwise (no adapter, Null backend,
   *  or a software rasteriser such as lavapipe); the reason is in `description`. */
  backend: "cpu" | "webgpu" | "auto";
  /** CPU: OpenBLAS threads. Ignored by webgpu. */
  threads: number;
  /** CPU: OpenBLAS library path override. */
  blasPath?: string;
  /** train.enable_mixed_precision: matmuls on bf16 operands (cpu) or f16 operands (webgpu: WGSL
   *  has no bf16) with f32 accumulation; `description` names the path. Default false. */
  mixedPrecision?: boolean;
}

/** Create the backend chosen once at start; log `k.description`. No per-op fallback exists. */
export async function createKernels(opts: KernelsOptions): Promise<Kernels> {
  switch (opts.backend) {
    case "auto": {
      const spec = "./webgpu/device.ts"; // loaded only when asked: it starts Dawn
      const { resolveBackend } = (await import(spec)) as { resolveBackend: (r: "auto") => Promise<{ backend: "cpu" | "webgpu"; why: string }> };
      const { backend, why } = await resolveBackend("auto");
      const k = await createKernels({ ...opts, backend });
      (k as { description: string }).description = `${k.description} [${why}]`;
      return k;
    }
    case "cpu":
      return createCpuKernels({ threads: opts.threads, blasPath: opts.blasPath, mixedPrecision: opts.mixedPrecision });
    case "webgpu": {
      // kernels/webgpu/ exports createWebGpuKernels(opts): Promise<Kernels>.
      const spec = "./webgpu/index.ts";
      const mod = (await import(spec)) as { createWebGpuKernels?: (o: KernelsOptions) => Promise<Kernels> };
      if (!mod.createWebGpuKernels) throw new Error("kernels: kernels/webgpu/index.ts does not export createWebGpuKernels");
      return mod.createWebGpuKernels(opts); // mixed precision: f16 operands (kernels/webgpu/mixed.ts)
    }
    default: {
      const never: never = opts.backend;
      throw new Error(`kernels.backend must be cpu, webgpu or auto, got ${String(never)}`);
    }
  }
}
