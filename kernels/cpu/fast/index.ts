// The fast CPU op set: OpenBLAS sgemm for every matmul (attention and the LM head included),
// tight typed-array loops for the rest.
import type { HostOps } from "../host_ops.ts";
import { ATTN_BC, ATTN_BR, attentionOps } from "./attention.ts";
import { denseOps } from "./dense.ts";
import { CE_CHUNK_FLOATS, lossOptimOps } from "./loss_optim.ts";
import { copyCols } from "../reference/moe.ts";
import { moeCombine, moeCombineBackward } from "./moe.ts";
import { normActOps } from "./norm_act.ts";
import type { Blas } from "./openblas.ts";

/** Block sizes; tests shrink them to exercise multi-block paths on small shapes. */
export interface FastTuning {
  attnBR: number;
  attnBC: number;
  ceChunkFloats: number;
}

export const DEFAULT_TUNING: FastTuning = { attnBR: ATTN_BR, attnBC: ATTN_BC, ceChunkFloats: CE_CHUNK_FLOATS };

export function makeFastOps(blas: Blas, tuning: FastTuning = DEFAULT_TUNING): HostOps {
  return {
    name: "fast",
    ...denseOps(blas),
    ...attentionOps(blas, tuning.attnBR, tuning.attnBC),
    ...lossOptimOps(blas, tuning.ceChunkFloats),
    moeCombine,
    moeCombineBackward,
    ...normActOps(),
    copyCols, // a plain copy loop: the reference's is already the fast one
  };
}
