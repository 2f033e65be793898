// parallel/: the parallel plans (DDP, FSDP/ZeRO/HSDP, Ulysses) and the one builder that
// applies them to a model from outside. See docs/plans.md.
export { SINGLE_PROCESS, type OptimizerShards, type StepCollectives } from "./collectives.ts";
export { Ddp } from "./ddp.ts";
export { ExpertParallel, expertParallelSizes } from "./expert.ts";
export { Fsdp, type FsdpOptions } from "./fsdp.ts";
export { hostViews, MeshGroups, parallelize, parallelSizes, type Parallelism, type ParallelizeOptions, type ParallelSizes } from "./plan.ts";
export { UlyssesAttention, ulyssesHeads, type UlyssesOptions } from "./ulysses.ts";
export { ulyssesSlice } from "./ulysses_data.ts";
