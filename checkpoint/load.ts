// Loading a committed checkpoint into any sharding (resharding: saved on N ranks, loaded on M).
// Everything is checked before the caller's buffers are touched: format version, every file
// present with its recorded size, the model's tensor names and shapes, the tiling of every
// tensor, and the CRC of every piece that is read. Then the pieces are copied into place.

import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { commitState } from "./committed.ts";
import { join } from "node:path";
import { METADATA_FILE, type Metadata, type PieceRef, decodeExtra, numelOf } from "./format.ts";
import { type Piece, coverageErrors } from "./plan.ts";

/** Reads metadata.json and checks the folder against it: every file there with its size, and
 *  every tensor tiled exactly once. Throws listing every problem. */
export function openCheckpoint(dir: string): Metadata {
  const st = commitState(dir);
  if (!st.committed) throw new Error(`${dir}: ${st.why}: not a committed checkpoint; refusing to load it`);
  const meta = st.meta;
  const errors: string[] = [];
  for (const [name, f] of Object.entries(meta.files)) {
    const p = join(dir, name);
    if (!existsSync(p)) errors.push(`rank ${f.rank} file ${name} is missing`);
    else if (statSync(p).size !== f.bytes) errors.push(`rank ${f.rank} file ${name} is ${statSync(p).size} bytes, metadata says ${f.bytes} (truncated or rewritten)`);
  }
  const shapes = new Map(Object.entries(meta.tensors).map(([n, t]) => [n, t.shape]));
  const runs = Object.entries(meta.tensors).flatMap(([name, t]) => t.pieces.map((p) => ({ name, start: p.start, length: p.length, rank: p.rank })));
  errors.push(...coverageErrors(shapes, runs));
  if (errors.length) throw new Error(`checkpoint ${dir} is unusable:\n  ${errors.join("\n  ")}`);
  return meta;
}

/** Every difference between the checkpoint's tensors and the model's (name -> shape). */
export function shapeMismatches(meta: Metadata, expected: ReadonlyMap<string, readonly number[]>): string[] {
  const out: string[] = [];
  for (const [name, shape] of expected) {
    const t = meta.tensors[name];
    if (!t) out.push(`${name}: expected [${shape.join(", ")}], absent from the checkpoint`);
    else if (t.shape.join() !== shape.join()) out.push(`${name}: expected [${shape.join(", ")}], checkpoint has [${t.shape.join(", ")}]`);
  }
  for (const name of Object.keys(meta.tensors)) {
    if (!expected.has(name)) out.push(`${name}: in the checkpoint [${meta.tensors[name].shape.join(", ")}], not in the model`);
  }
  return out;
}

/**
 * Checks the whole-file CRC-32 recorded in the metadata for each named file (header included: a
 * flipped byte there is not in any piece's CRC). Reads in 16 MiB chunks; throws naming the file.
 */
export function verifyFiles(dir: string, meta: Metadata, names: Iterable<string>): void {
  const buf = new Uint8Array(16 << 20);
  for (const name of names) {
    const f = meta.files[name];
    if (!f) throw new Error(`checkpoint ${dir}: file ${name} is not in ${METADATA_FILE}`);
    const fd = openSync(join(dir, name), "r");
    let crc = 0;
    let at = 0;
    try {
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, at);
        if (n <= 0) break;
        crc = Bun.hash.crc32(buf.subarray(0, n), crc);
        at += n;
      }
    } finally {
      closeSync(fd);
    }
    if (crc !== f.crc32) {
      throw new Error(`checkpoint ${dir}: rank ${f.rank} file ${name} is corrupted (CRC-32 of the file ${crc.toString(16)}, ${METADATA_FILE} says ${f.crc32.toString(16)})`);
    }
  }
}

/** Reads one saved piece whole and checks its CRC. */
function readPiece(dir: string, ref: PieceRef, fds: Map<string, number>): Float32Array {
  let fd = fds.get(ref.file);
  if (fd === undefined) fds.set(ref.file, (fd = openSync(join(dir, ref.file), "r")));
  const out = new Float32Array(ref.length);
  const bytes = new Uint8Array(out.buffer);
  for (let at = 0; at < bytes.length; ) {
    const n = readSync(fd, bytes, at, bytes.length - at, ref.byteOffset + at);
    if (n <= 0) throw new Error(`rank ${ref.rank} file ${ref.file}: ${ref.key} ends early at byte ${ref.byteOffset + at} (truncated)`);
    at += n;
  }
  const crc = Bun.hash.crc32(bytes);
  if (crc !== ref.crc32) throw new Error(`rank ${ref.rank} file ${ref.file}: ${ref.key} is corrupted (CRC-32 ${crc.toString(16)}, metadata says ${ref.crc32.toString(16)})`);
  return out;
}

export interface LoadRequest {
  /** Every global tensor of the model and optimizer (name -> shape): the compatibility check. */
  expected: ReadonlyMap<string, readonly number[]>;
  /** The pieces this rank holds; their `data` is filled. Any sharding: FSDP, DDP, uneven. */
  targets: readonly Piece[];
  /** Check the whole-file CRC of every file read from (default true; a caller that verified
   *  them already, as merge does once for all tensors, passes false). Piece CRCs are always checked. */
  verify?: boolean;
}

/** Fills `targets` from the checkpoint in `dir`; nothing is written unless every check passes. */
export function loadShard(dir: string, req: LoadRequest, meta: Metadata = openCheckpoint(dir)): Metadata {
  const errors = shapeMismatches(meta, req.expected);
  for (const t of req.targets) {
    const numel = numelOf(t.shape);
    if (t.start < 0 || t.start + t.data.length > numel) errors.push(`${t.name}: target [${t.start}, +${t.data.length}) outside ${numel} elements`);
  }
  if (errors.length) throw new Error(`checkpoint ${dir} does not fit this model:\n  ${errors.join("\n  ")}`);

  // Plan: each target run takes sub-runs of the saved pieces that overlap it.
  const copies: { target: Piece; ref: PieceRef; from: number; to: number; len: number }[] = [];
  for (const t of req.targets) {
    const lo = t.start, hi = t.start + t.data.length;
    for (const ref of meta.tensors[t.name].pieces) {
      const a = Math.max(lo, ref.start), b = Math.min(hi, ref.start + ref.length);
      if (a < b) copies.push({ target: t, ref, from: a - ref.start, to: a - lo, len: b - a });
    }
  }
  if (req.verify !== false) verifyFiles(dir, meta, new Set(copies.map((c) => c.ref.file)));
  const fds = new Map<string, number>();
  const read = new Map<PieceRef, Float32Array>();
  try {
    for (const c of copies) if (!read.has(c.ref)) read.set(c.ref, readPiece(dir, c.ref, fds));
  } finally {
    for (const fd of fds.values()) closeSync(fd);
  }
  // All reads verified: only now touch the caller's buffers.
  for (const c of copies) c.target.data.set(read.get(c.ref)!.subarray(c.from, c.from + c.len), c.to);
  return meta;
}

/** The extra state saved by `rank` (step, scheduler, dataloader, RNG, counters), CRC-checked. */
export function loadExtra(dir: string, meta: Metadata, rank: number): unknown {
  const name = meta.extra[rank];
  if (name === undefined) throw new Error(`checkpoint ${dir}: no extra state for rank ${rank} (saved on ${meta.world_size} ranks)`);
  const bytes = readFileSync(join(dir, name));
  const f = meta.files[name];
  if (!f || Bun.hash.crc32(bytes) !== f.crc32 || bytes.length !== f.bytes) throw new Error(`checkpoint ${dir}: extra state ${name} of rank ${rank} is corrupted or truncated`);
  return decodeExtra(new TextDecoder().decode(bytes));
}

/** Every saved rank's extra state, index = saved rank: what a resharding restore needs (the
 *  data loader deals all ranks' positions out again over the new world size). */
export function loadAllExtra(dir: string, meta: Metadata): unknown[] {
  return meta.extra.map((_, r) => loadExtra(dir, meta, r));
}
