// Which elements of which global tensor each rank holds, and checks that a set of pieces tiles
// every tensor exactly once. Pure functions over element ranges; no I/O.
//
// A piece is a contiguous run [start, start+length) of a global tensor flattened row-major.
// FSDP: a unit's parameters live in one flat buffer (views at element offsets), padded to a
// multiple of the world size and split evenly; rank r's shard intersects each view in at most
// one run, so a rank has at most one piece per tensor. DDP: every rank holds everything; to
// spread the writes, each rank saves one even share of the concatenation (replicatedShare).

import { type Group, numelOf } from "./format.ts";

/** A rank's piece with its data: saving reads `data`, loading fills it. data.length = length. */
export interface Piece {
  name: string;
  group: Group;
  /** Global shape of the whole tensor. */
  shape: number[];
  /** First element of the run, in the flattened global tensor. */
  start: number;
  data: Float32Array;
}

/** A named tensor inside a flat buffer: elements [offset, offset + numel(shape)). */
export interface FlatView {
  name: string;
  shape: number[];
  offset: number;
}

/** Rank r's slice of a flat buffer of `total` elements padded to a multiple of `world`:
 *  [start, start + size) in the padded buffer; the elements at >= total are padding. */
export function evenShard(total: number, world: number, rank: number): { start: number; size: number } {
  const size = Math.ceil(total / world);
  return { start: rank * size, size };
}

/** The runs of each view that fall inside the flat range [lo, lo + len).
 *  flatOffset is where the run starts in the flat buffer (subtract lo for the shard buffer). */
export function flatRangePieces(
  views: readonly FlatView[], lo: number, len: number,
): { name: string; shape: number[]; start: number; length: number; flatOffset: number }[] {
  const hi = lo + len;
  const out = [];
  for (const v of views) {
    const a = Math.max(lo, v.offset);
    const b = Math.min(hi, v.offset + numelOf(v.shape));
    if (a < b) out.push({ name: v.name, shape: v.shape, start: a - v.offset, length: b - a, flatOffset: a });
  }
  return out;
}

/** Pieces of an FSDP shard: `shard` holds flat elements [shardStart, shardStart + shard.length).
 *  `prefix` names optimizer state, e.g. "optim.exp_avg." over the parameter views. */
export function shardPieces(
  views: readonly FlatView[], shardStart: number, shard: Float32Array, group: Group, prefix = "",
): Piece[] {
  return flatRangePieces(views, shardStart, shard.length).map((p) => ({
    name: prefix + p.name,
    group,
    shape: p.shape,
    start: p.start,
    data: shard.subarray(p.flatOffset - shardStart, p.flatOffset - shardStart + p.length),
  }));
}

/** A replicated (DDP) rank's even share of full tensors, so W ranks write 1/W of the bytes each. */
export function replicatedShare(
  tensors: readonly { name: string; shape: number[]; data: Float32Array }[], world: number, rank: number, group: Group, prefix = "",
): Piece[] {
  const views: FlatView[] = [];
  let off = 0;
  for (const t of tensors) {
    views.push({ name: t.name, shape: t.shape, offset: off });
    off += numelOf(t.shape);
  }
  const { start, size } = evenShard(off, world, rank);
  return flatRangePieces(views, start, Math.max(0, Math.min(size, off - start))).map((p) => {
    const t = tensors.find((x) => x.name === p.name)!;
    return { name: prefix + p.name, group, shape: p.shape, start: p.start, data: t.data.subarray(p.start, p.start + p.length) };
  });
}

export interface Run {
  name: string;
  start: number;
  length: number;
  /** Who holds it (a rank), for the error messages. */
  rank: number;
}

/** Every problem with `runs` tiling each tensor of `shapes` exactly once: gaps, overlaps,
 *  runs past the end, runs of unknown tensors. Empty when the tiling is exact. */
export function coverageErrors(shapes: ReadonlyMap<string, readonly number[]>, runs: readonly Run[]): string[] {
  const errors: string[] = [];
  const byName = new Map<string, Run[]>();
  for (const r of runs) {
    if (!shapes.has(r.name)) {
      errors.push(`rank ${r.rank} holds a piece of unknown tensor ${r.name}`);
      continue;
    }
    if (!Number.isInteger(r.start) || !Number.isInteger(r.length) || r.start < 0 || r.length <= 0) {
      errors.push(`rank ${r.rank}: bad piece of ${r.name} [${r.start}, +${r.length})`);
      continue;
    }
    let list = byName.get(r.name);
    if (!list) byName.set(r.name, (list = []));
    list.push(r);
  }
  for (const [name, shape] of shapes) {
    const numel = numelOf(shape);
    const list = (byName.get(name) ?? []).sort((a, b) => a.start - b.start);
    let at = 0;
    for (const r of list) {
      if (r.start > at) errors.push(`${name}: elements [${at}, ${r.start}) are held by no rank`);
      if (r.start < at) errors.push(`${name}: elements [${r.start}, ${Math.min(at, r.start + r.length)}) are held twice (rank ${r.rank} overlaps)`);
      at = Math.max(at, r.start + r.length);
    }
    if (at < numel) errors.push(`${name}: elements [${at}, ${numel}) of ${numel} are held by no rank`);
    if (at > numel) errors.push(`${name}: pieces reach element ${at} but the tensor has ${numel} (shape [${shape.join(", ")}])`);
  }
  return errors;
}
