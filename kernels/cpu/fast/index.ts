// The fast CPU op set: every matmul through a GEMM (`mm`: the f32 GEMM, or bf16 operands with f32
// accumulation under mixed precision, attention's flash blocks included), native element-wise
// loops and attention when the library built (native/vec.c, attn.c), else tight TypeScript loops.
import type { HostOps } from "../host_ops.ts";
import type { Native } from "../native/index.ts";
import { ATTN_BC, ATTN_BR, attentionOps, type AttnMode } from "./attention.ts";
import { denseOps } from "./dense.ts";
import type { Gemm } from "./gemm.ts";
import { CE_CHUNK_FLOATS, lossOptimOps } from "./loss_optim.ts";
import { copyCols } from "../reference/moe.ts";
import { groupedGemmOp, moeCombine, moeCombineBackward } from "./moe.ts";
import { normActOps } from "./norm_act.ts";

/** Block sizes; tests shrink them to exercise multi-block paths on small shapes. */
export interface FastTuning {
  attnBR: number;
  attnBC: number;
  ceChunkFloats: number;
}

export const DEFAULT_TUNING: FastTuning = { attnBR: ATTN_BR, attnBC: ATTN_BC, ceChunkFloats: CE_CHUNK_FLOATS };

/** f32: the f32 GEMM; mm: the GEMM of every matmul (f32 or bf16 operands); attn: the native
 *  attention's operand mode (the same numerics as `mm`), null for the TypeScript flash blocks on `mm`. */
export function makeFastOps(f32: Gemm, mm: Gemm, native: Native | null, tuning: FastTuning = DEFAULT_TUNING, attn: AttnMode | null = null): HostOps {
  return {
    name: "fast",
    ...denseOps(mm, native),
    ...attentionOps(mm, native, tuning.attnBR, tuning.attnBC, attn),
    ...lossOptimOps(mm, native, tuning.ceChunkFloats),
    groupedGemm: groupedGemmOp(mm),
    moeCombine,
    moeCombineBackward,
    ...normActOps(),
    copyCols, // a plain copy loop: the reference's is already the fast one
  };
}
