// What the Trainer sees of a parallel plan: the step's reductions and, under ZeRO, the slice of
// each unit its optimizer owns. The Trainer imports these types and nothing else of parallel/.
import type { Tensor } from "../kernels/index.ts";
import type { DecoderLM } from "../models/index.ts";

type F32 = Tensor<"f32">;

/** Reductions of a step over every rank of the job (all-reduce sums). */
export interface StepCollectives {
  /** Sum of a host number over ranks (token counts, loss sums, squared grad norms of shards). */
  allReduceSum(x: number): Promise<number>;
  /** After the last backward: DDP all-reduces grads, FSDP waits for its reduce-scatters. */
  syncGrads(model: DecoderLM): Promise<void>;
}

export const SINGLE_PROCESS: StepCollectives = {
  allReduceSum: async (x) => x,
  syncGrads: async () => {},
};

/** The part of each unit's flat buffers this rank's optimizer owns. Default: all of it. FSDP
 *  (ZeRO) gives each rank its shard [start, start + numel) of the unit, with the shard's own
 *  param/grad tensors (grads already reduce-scattered by syncGrads). */
export interface OptimizerShards {
  slice(u: number): { start: number; param: F32; grad: F32 };
}
