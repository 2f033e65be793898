// mesh/: device mesh, authenticated TCP transport (in a worker thread) and collectives.
export { Comm, CommGroup, sharedF32, type ListenOptions, type MeshLogger, type StartOptions } from "./comm.ts";
export { deviceMesh, expertMesh, Mesh, TRAIN_AXES, EXPERT_AXES, type TrainAxis, type ExpertAxis, type TrainDims } from "./dims.ts";
export { balancedOffsets, offsetsOf } from "./collectives.ts";
export { crc32c } from "./crc32c.ts";
export type { ReduceKind } from "./wire.ts";
