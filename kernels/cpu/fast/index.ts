// The fast CPU op set: OpenBLAS for matmuls, tight typed-array loops for the rest.
import type { HostOps } from "../host_ops.ts";
import { referenceOps } from "../reference/index.ts";
import { denseOps } from "./dense.ts";
import type { Blas } from "./openblas.ts";

export function makeFastOps(blas: Blas): HostOps {
  return { ...referenceOps, ...denseOps(blas), name: "fast" };
}
