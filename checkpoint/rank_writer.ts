// One rank's part of a save: lay its pieces out as two safetensors files (model, optim) whose
// data sections mirror one staging buffer byte for byte, then write them durably. layoutRank
// and stagePieces run on the training thread (the copy is the whole training stall);
// writeRank runs on the writer thread (writer_worker.ts) or inline, and returns the report the
// coordinator needs to commit (commit.ts).

import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import {
  type FileMeta, type Group, type PieceRef, extraFileName, numelOf, pieceKey, rankFileName,
} from "./format.ts";
import type { Piece } from "./plan.ts";
import { encodeHeader } from "./safetensors.ts";
import { commitState } from "./committed.ts";

export interface LaidPiece {
  name: string;
  group: Group;
  shape: number[];
  start: number;
  length: number;
  key: string;
  /** Byte offset of the piece in the staging buffer. */
  staging: number;
  /** Absolute byte offset of the piece in its file. */
  byteOffset: number;
}

export interface RankFileLayout {
  name: string;
  header: Uint8Array;
  /** The file's data section is staging[stagingBegin, stagingEnd). */
  stagingBegin: number;
  stagingEnd: number;
  pieces: LaidPiece[];
}

export interface RankLayout {
  rank: number;
  step: number;
  /** Job epoch, part of the file names when given. */
  epoch?: number;
  files: RankFileLayout[];
  stagingBytes: number;
}

/** What a rank tells the coordinator once its files are durable. */
export interface RankReport {
  rank: number;
  step: number;
  files: Record<string, FileMeta>;
  pieces: { name: string; group: Group; shape: number[]; ref: PieceRef }[];
  extra: string;
  /** Wall-clock ms (performance.timeOrigin + now, comparable across threads) when the writer
   *  started and when everything was fsynced: time to durable without event-loop delays. */
  writeStartedAt: number;
  durableAt: number;
}

const wallMs = () => performance.timeOrigin + performance.now();

export function layoutRank(rank: number, step: number, pieces: readonly Piece[], epoch?: number): RankLayout {
  const files: RankFileLayout[] = [];
  let staging = 0;
  for (const group of ["model", "optim"] as const) {
    const mine = pieces.filter((p) => p.group === group);
    const specs = mine.map((p) => {
      const whole = p.start === 0 && p.data.length === numelOf(p.shape);
      return { name: pieceKey(p.name, p.shape, p.start, p.data.length), dtype: "F32" as const, shape: whole ? p.shape : [p.data.length] };
    });
    const { bytes: header, infos } = encodeHeader(specs, { format: "veomni-ts-checkpoint", rank: String(rank), step: String(step) });
    const begin = staging;
    const laid = mine.map((p, i) => {
      const lp: LaidPiece = { name: p.name, group, shape: p.shape, start: p.start, length: p.data.length, key: specs[i].name, staging, byteOffset: header.length + infos[i].offsets[0] };
      staging += p.data.length * 4;
      return lp;
    });
    files.push({ name: rankFileName(group, rank, epoch), header, stagingBegin: begin, stagingEnd: staging, pieces: laid });
  }
  return { rank, step, epoch, files, stagingBytes: staging };
}

/** Copies every piece into staging (f32 at the laid-out offsets). The only work that blocks training. */
export function stagePieces(layout: RankLayout, pieces: readonly Piece[], staging: Float32Array): void {
  const laid = layout.files.flatMap((f) => f.pieces);
  if (laid.length !== pieces.length) throw new Error(`rank ${layout.rank}: ${pieces.length} pieces for a layout of ${laid.length}`);
  const byGroup = { model: pieces.filter((p) => p.group === "model"), optim: pieces.filter((p) => p.group === "optim") };
  const ordered = [...byGroup.model, ...byGroup.optim];
  for (let i = 0; i < ordered.length; i++) {
    const p = ordered[i], l = laid[i];
    if (p.name !== l.name || p.data.length !== l.length) throw new Error(`rank ${layout.rank}: piece ${i} is ${p.name}[${p.data.length}], layout says ${l.name}[${l.length}]`);
    staging.set(p.data, l.staging / 4);
  }
}

export interface WriteOptions {
  /** Fault injection for the kill tests: after this many data bytes, call onPause and stop there. */
  pauseAfterBytes?: number;
  onPause?: () => void;
}

const CHUNK = 16 << 20; // bytes per write(2): large enough for full disk speed, small enough to interleave

function writeAll(fd: number, bytes: Uint8Array, opts: WriteOptions, written: { n: number }): void {
  for (let at = 0; at < bytes.length; ) {
    if (opts.pauseAfterBytes !== undefined && written.n >= opts.pauseAfterBytes) {
      opts.onPause?.();
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // parked here until killed
    }
    const limit = opts.pauseAfterBytes === undefined ? CHUNK : Math.min(CHUNK, opts.pauseAfterBytes - written.n); // stop exactly there
    const n = writeSync(fd, bytes, at, Math.min(limit, bytes.length - at));
    at += n;
    written.n += n;
  }
}

/** Checks, checksums and writes one rank's files into `dir`, each fsynced, then the folder.
 *  Refuses non-finite values (nothing is written) and a folder that is already committed. */
export function writeRank(dir: string, layout: RankLayout, staging: Uint8Array, extraText: string, opts: WriteOptions = {}): RankReport {
  const writeStartedAt = wallMs();
  const where = `rank ${layout.rank} step ${layout.step}`;
  if (commitState(dir).committed) throw new Error(`${where}: ${dir} is already committed; refusing to overwrite it`);
  const f32 = new Float32Array(staging.buffer, staging.byteOffset, staging.byteLength >> 2);
  const bad: string[] = [];
  for (const f of layout.files) {
    for (const p of f.pieces) {
      // Parameters only: optimizer state follows them (a NaN there makes the next step's parameters NaN).
      if (p.group !== "model") continue;
      const i = firstNonFinite(f32.subarray(p.staging / 4, p.staging / 4 + p.length));
      if (i >= 0) bad.push(`${p.name}[${p.start + i}]=${f32[p.staging / 4 + i]}`);
    }
  }
  if (bad.length) throw new Error(`${where}: non-finite values, checkpoint not written: ${bad.slice(0, 8).join(", ")}${bad.length > 8 ? ` and ${bad.length - 8} more tensors` : ""}`);

  // Write every file, checksumming each piece just before its bytes go out (cache-hot); fsync
  // only after all are written, so the kernel flushes one file while we write the next.
  // A write that fails (ENOSPC: a full disk, EIO) names the file; the OS error does not.
  let current = dir;
  try {
    return writeFiles();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`${where}: writing ${current}: ${err.code ? `${err.code}: ` : ""}${err.message.replace(/^[A-Z]+: /, "")}`);
  }

  function writeFiles(): RankReport {
    mkdirSync(dir, { recursive: true });
    const files: Record<string, FileMeta> = {};
    const crcs = new Map<LaidPiece, number>();
    const written = { n: 0 };
    const fds: number[] = [];
    try {
      for (const f of layout.files) {
        current = join(dir, f.name);
        const fd = openSync(current, "w");
        fds.push(fd);
        writeAll(fd, f.header, opts, written);
        let crc = Bun.hash.crc32(f.header);
        for (const p of f.pieces) {
          const bytes = staging.subarray(p.staging, p.staging + p.length * 4);
          crcs.set(p, Bun.hash.crc32(bytes));
          crc = Bun.hash.crc32(bytes, crc);
          writeAll(fd, bytes, opts, written);
        }
        files[f.name] = { rank: layout.rank, bytes: f.header.length + (f.stagingEnd - f.stagingBegin), crc32: crc };
      }
      for (const [i, fd] of fds.entries()) {
        current = join(dir, layout.files[i].name);
        fsyncSync(fd);
      }
    } finally {
      for (const fd of fds) closeSync(fd);
  }
  const extra = extraFileName(layout.rank, layout.epoch);
  const extraBytes = new TextEncoder().encode(extraText);
  current = join(dir, extra);
  const fd = openSync(current, "w");
  try {
    writeAll(fd, extraBytes, opts, written);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  files[extra] = { rank: layout.rank, bytes: extraBytes.length, crc32: Bun.hash.crc32(extraBytes) };
  current = dir;
  fsyncDir(dir);
  const pieces = layout.files.flatMap((f) => f.pieces.map((p) => ({
    name: p.name, group: p.group, shape: p.shape,
    ref: { rank: layout.rank, file: f.name, key: p.key, start: p.start, length: p.length, byteOffset: p.byteOffset, crc32: crcs.get(p)! },
  })));
  return { rank: layout.rank, step: layout.step, files, pieces, extra, writeStartedAt, durableAt: wallMs() };
  }
}

/** Index of the first NaN/Inf in v, or -1. x*0 is 0 for finite x and NaN otherwise: a branch-free
 *  scan with 4 accumulators (~3x faster than a compare per element), then a slow pass on failure. */
export function firstNonFinite(v: Float32Array): number {
  let z0 = 0, z1 = 0, z2 = 0, z3 = 0;
  const n4 = v.length & ~3;
  for (let i = 0; i < n4; i += 4) {
    z0 += v[i] * 0;
    z1 += v[i + 1] * 0;
    z2 += v[i + 2] * 0;
    z3 += v[i + 3] * 0;
  }
  for (let i = n4; i < v.length; i++) z0 += v[i] * 0;
  if (z0 + z1 + z2 + z3 === 0) return -1;
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) return i;
  return -1;
}

/** fsync a directory so the names created in it survive a crash. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
