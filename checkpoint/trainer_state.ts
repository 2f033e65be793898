// The bridge from a trainer's flat per-unit buffers (llm.c style: one f32 buffer per FSDP unit
// with named views, AdamW exp_avg / exp_avg_sq mirroring it) to checkpoint pieces. Structural
// types only: models/ ParamEntry and actors/ Trainer fit them without checkpoint/ importing
// either. On the CPU backend the buffers are the tensors' `host` arrays (no copy); on a device
// backend, `await k.read(t)` copies for a save and `k.upload` puts loaded values back.

import { numelOf } from "./format.ts";
import { type Piece, replicatedShare, shardPieces } from "./plan.ts";

export const EXP_AVG = "optim.exp_avg.";
export const EXP_AVG_SQ = "optim.exp_avg_sq.";

/** A parameter inside its unit's (whole, unsharded) flat buffer: models/ ParamEntry fits. */
export interface ParamView {
  name: string;
  shape: number[];
  offset: number;
}

/** What one rank holds of one unit. */
export interface UnitBuffers {
  params: readonly ParamView[];
  /** Element of the whole unit's flat buffer where these buffers start: 0 for a whole unit
   *  (single process, DDP), the shard start for FSDP (padding past the unit's end is ignored). */
  start: number;
  model: Float32Array;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
  /** Every global tensor of the unit when the rank holds only some of them (an expert-parallel
   *  rank's experts): what a checkpoint must hold; default `params`. */
  allParams?: readonly { name: string; shape: number[] }[];
}

/** Every element this rank holds, as pieces: for a save (FSDP: each rank its shard) and as
 *  load targets (any sharding: the checkpoint is resharded into them). */
export function statePieces(units: readonly UnitBuffers[]): Piece[] {
  return units.flatMap((u) => {
    const unitNumel = u.params.reduce((a, p) => Math.max(a, p.offset + numelOf(p.shape)), 0);
    const len = Math.max(0, Math.min(u.model.length, unitNumel - u.start)); // drop FSDP padding
    const views = u.params as ParamView[];
    return [
      ...shardPieces(views, u.start, u.model.subarray(0, len), "model"),
      ...shardPieces(views, u.start, u.expAvg.subarray(0, len), "optim", EXP_AVG),
      ...shardPieces(views, u.start, u.expAvgSq.subarray(0, len), "optim", EXP_AVG_SQ),
    ];
  });
}

/** DDP: every rank holds whole units; rank r saves an even 1/world share of each group, so the
 *  ranks write in parallel and the checkpoint holds one copy. */
export function replicatedStatePieces(units: readonly UnitBuffers[], world: number, rank: number): Piece[] {
  const of = (pick: (u: UnitBuffers) => Float32Array) =>
    units.flatMap((u) => u.params.map((p) => ({ name: p.name, shape: p.shape, data: pick(u).subarray(p.offset, p.offset + numelOf(p.shape)) })));
  return [
    ...replicatedShare(of((u) => u.model), world, rank, "model"),
    ...replicatedShare(of((u) => u.expAvg), world, rank, "optim", EXP_AVG),
    ...replicatedShare(of((u) => u.expAvgSq), world, rank, "optim", EXP_AVG_SQ),
  ];
}

/** Every global tensor of model + optimizer (name -> shape): LoadRequest.expected. */
export function stateShapes(units: readonly { params: readonly ParamView[]; allParams?: readonly { name: string; shape: number[] }[] }[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const prefix of ["", EXP_AVG, EXP_AVG_SQ]) for (const u of units) for (const p of u.allParams ?? u.params) out.set(prefix + p.name, p.shape);
  return out;
}
