// Checkpoints (DESIGN.md section 8): what the trainer, the coordinator and the tools call.
//
// Rank side (checkpoint actor), after optimizer step N when N is a save step:
//   const ticket = await saver.save({ dir: checkpointDir(out, N), step: N, pieces, extra })
//   // training continues; ticket.stallMs is the blocked time
//   const report = await ticket.durable          // -> send to the coordinator
// Coordinator, once every rank's report for step N is in:
//   commitCheckpoint({ dir, step: N, epoch, worldSize, mesh, reports }) // writes metadata.json
//   then CAS `last_checkpoint` in the job's KV state
// Start / restart:
//   const dir = resolveLoadPath(train.load_checkpoint_path, out)   // "auto" -> newest commit
//   const meta = loadShard(dir, { expected, targets: pieces })      // any world size
//   const extra = loadExtra(dir, meta, rank)
export * from "./format.ts";
export * from "./plan.ts";
export { AsyncSaver, type SaveRequest, type SaveTicket } from "./saver.ts";
export { type RankReport, layoutRank, stagePieces, writeRank } from "./rank_writer.ts";
export { buildMetadata, commitCheckpoint, committedClashes, listCommitted, removeStaleEpochFiles, resolveLoadPath, type Skipped } from "./commit.ts";
export { commitState, type CommitState } from "./committed.ts";
export { parseStepDir } from "./format.ts";
export { loadAllExtra, loadExtra, loadShard, openCheckpoint, shapeMismatches, type LoadRequest } from "./load.ts";
export { mergeToHf, parseDType, parseSize, type ExportDType, type MergeOptions } from "./merge.ts";
export { ASSET_FILES, writeModelAssets } from "./assets.ts";
export { checkpointDir, isSaveStep, epochEndingAt, isSaveStepOf } from "./schedule.ts";
export { EXP_AVG, EXP_AVG_SQ, replicatedStatePieces, stateShapes, statePieces, type ParamView, type UnitBuffers } from "./trainer_state.ts";
export { CommitTracker, type CommitOutcome, type TrackerOptions } from "./commit_tracker.ts";
export { LocalCheckpointing, RankCheckpointer, type Checkpointable, type LocalOptions, type RankOptions } from "./session.ts";
