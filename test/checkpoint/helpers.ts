// Shared by the checkpoint tests: a small model's tensor list grouped into FSDP units, filled
// with seeded values, and the per-rank pieces an FSDP or DDP trainer would hand to a save.
import { numelOf } from "../../checkpoint/format.ts";
import { type FlatView, type Piece, evenShard, replicatedShare, shardPieces } from "../../checkpoint/plan.ts";

export type Units = { name: string; shape: number[] }[][];

/** Odd sizes on purpose, so even splits over 3 and 4 ranks cut tensors mid-row and pad. */
export function smallModel(layers = 2, V = 37, C = 12, F = 20): Units {
  const units: Units = [[{ name: "model.embed_tokens.weight", shape: [V, C] }]];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`;
    units.push([
      { name: p + "input_layernorm.weight", shape: [C] },
      { name: p + "self_attn.q_proj.weight", shape: [C, C] },
      { name: p + "self_attn.k_proj.weight", shape: [C / 2, C] },
      { name: p + "mlp.gate_proj.weight", shape: [F, C] },
      { name: p + "mlp.down_proj.weight", shape: [C, F] },
    ]);
  }
  units.push([{ name: "model.norm.weight", shape: [C] }, { name: "lm_head.weight", shape: [V, C] }]);
  return units;
}

export const OPTIM = ["optim.exp_avg.", "optim.exp_avg_sq."];

/** name -> values for parameters and both optimizer states, from a seeded LCG (no Math.random). */
export function fillModel(units: Units, seed: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5);
  for (const prefix of ["", ...OPTIM]) {
    for (const u of units) for (const t of u) {
      const a = new Float32Array(numelOf(t.shape));
      for (let i = 0; i < a.length; i++) a[i] = next() * (prefix === "optim.exp_avg_sq." ? 1e-3 : 1);
      out.set(prefix + t.name, a);
    }
  }
  return out;
}

export function expectedShapes(units: Units): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const prefix of ["", ...OPTIM]) for (const u of units) for (const t of u) m.set(prefix + t.name, t.shape);
  return m;
}

function unitViews(unit: { name: string; shape: number[] }[]): { views: FlatView[]; total: number } {
  let off = 0;
  const views = unit.map((t) => {
    const v = { name: t.name, shape: t.shape, offset: off };
    off += numelOf(t.shape);
    return v;
  });
  return { views, total: off };
}

/** Rank r's FSDP pieces (params + optimizer state), copied from `full` (or zeros when null). */
export function fsdpPieces(units: Units, world: number, rank: number, full: Map<string, Float32Array> | null): Piece[] {
  const pieces: Piece[] = [];
  for (const unit of units) {
    const { views, total } = unitViews(unit);
    const { start, size } = evenShard(total, world, rank);
    for (const [group, prefix] of [["model", ""], ["optim", OPTIM[0]], ["optim", OPTIM[1]]] as const) {
      const shard = new Float32Array(size); // padded tail stays 0
      const ps = shardPieces(views, start, shard, group, prefix);
      if (full) for (const p of ps) p.data.set(full.get(p.name)!.subarray(p.start, p.start + p.data.length));
      pieces.push(...ps);
    }
  }
  return pieces;
}

/** DDP: every rank holds everything; it saves an even 1/world share (per group). */
export function ddpPieces(units: Units, world: number, rank: number, full: Map<string, Float32Array>): Piece[] {
  const out: Piece[] = [];
  for (const [group, prefix] of [["model", ""], ["optim", OPTIM[0]], ["optim", OPTIM[1]]] as const) {
    const tensors = units.flat().map((t) => ({ name: t.name, shape: t.shape, data: full.get(prefix + t.name)! }));
    out.push(...replicatedShare(tensors, world, rank, group, prefix));
  }
  return out;
}

/** Puts pieces of many ranks back into whole tensors. */
export function assemble(all: Piece[][]): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const ps of all) for (const p of ps) {
    let a = out.get(p.name);
    if (!a) out.set(p.name, (a = new Float32Array(numelOf(p.shape)).fill(NaN)));
    a.set(p.data, p.start);
  }
  return out;
}


/** Bitwise equality of two f32 arrays; returns the first differing index or -1. */
export function firstDiff(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (x.length !== y.length) return 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

import { commitCheckpoint } from "../../checkpoint/commit.ts";
import type { Metadata } from "../../checkpoint/format.ts";
import { AsyncSaver } from "../../checkpoint/saver.ts";

/** Saves every rank's pieces through its own AsyncSaver (one writer thread each) and commits. */
export async function saveAll(dir: string, step: number, perRank: Piece[][], extra: (rank: number) => unknown = (r) => ({ step, rank: r })): Promise<Metadata> {
  const savers = perRank.map((_, r) => new AsyncSaver(r));
  try {
    const tickets = await Promise.all(perRank.map((pieces, r) => savers[r].save({ dir, step, pieces, extra: extra(r) })));
    const reports = await Promise.all(tickets.map((t) => t.durable));
    return commitCheckpoint({ dir, step, epoch: 0, worldSize: perRank.length, mesh: { dp_shard: perRank.length }, reports });
  } finally {
    await Promise.all(savers.map((s) => s.close()));
  }
}
