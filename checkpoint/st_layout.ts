// safetensors framing for streaming writers: build a header for entries whose bytes come later,
// and read a header back. Format: u64 little-endian header length N, N bytes of JSON
// {key: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data,
// offsets relative to its start, contiguous without holes. The JSON is padded with spaces so
// the data starts 8-byte aligned (Float32Array views over a mapped file stay aligned).
// checkpoint/safetensors.ts (M) loads whole model files; this is the writer side for
// checkpoints and merge, which stream from staging memory instead of holding a second copy.

import { closeSync, fstatSync, openSync, readSync } from "node:fs";

export type StDType = "F32" | "BF16" | "F16";
export const DTYPE_BYTES: Record<StDType, number> = { F32: 4, BF16: 2, F16: 2 };

export interface StEntry {
  key: string;
  dtype: StDType;
  shape: number[];
  /** Bytes of data; must equal numel(shape) * size of dtype. */
  bytes: number;
}

/** The header bytes (length prefix included) and where each entry's data lands in the file. */
export function buildHeader(entries: readonly StEntry[], metadata?: Record<string, string>): {
  header: Uint8Array;
  /** Absolute byte offset of each entry's data in the file, in entry order. */
  fileOffsets: number[];
  fileBytes: number;
} {
  const json: Record<string, unknown> = {};
  if (metadata) json.__metadata__ = metadata;
  let at = 0;
  const rel: number[] = [];
  for (const e of entries) {
    const numel = e.shape.reduce((a, b) => a * b, 1);
    if (numel * DTYPE_BYTES[e.dtype] !== e.bytes) throw new Error(`safetensors entry ${e.key}: ${e.bytes} bytes for shape [${e.shape}] ${e.dtype}`);
    if (e.key in json) throw new Error(`safetensors entry ${e.key}: duplicate key`);
    json[e.key] = { dtype: e.dtype, shape: e.shape, data_offsets: [at, at + e.bytes] };
    rel.push(at);
    at += e.bytes;
  }
  let text = JSON.stringify(json);
  const raw = new TextEncoder().encode(text);
  const pad = (8 - ((8 + raw.length) % 8)) % 8;
  const n = raw.length + pad;
  const header = new Uint8Array(8 + n);
  new DataView(header.buffer).setBigUint64(0, BigInt(n), true);
  header.set(raw, 8);
  header.fill(0x20, 8 + raw.length);
  return { header, fileOffsets: rel.map((r) => 8 + n + r), fileBytes: 8 + n + at };
}

export interface StHeader {
  /** Absolute file offset where the data section starts. */
  dataStart: number;
  fileBytes: number;
  entries: Map<string, { dtype: string; shape: number[]; begin: number; end: number }>;
  metadata: Record<string, string>;
}

/** Reads and checks the header of a safetensors file: sizes bounded by the file, offsets in range. */
export function readHeader(path: string): StHeader {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const pre = new Uint8Array(8);
    if (size < 8 || readSync(fd, pre, 0, 8, 0) !== 8) throw new Error(`${path}: truncated (${size} bytes, no safetensors header)`);
    const n = Number(new DataView(pre.buffer).getBigUint64(0, true));
    if (n > size - 8 || n > 100 << 20) throw new Error(`${path}: header length ${n} exceeds the file (${size} bytes)`);
    const buf = new Uint8Array(n);
    readSync(fd, buf, 0, n, 8);
    let json: Record<string, any>;
    try {
      json = JSON.parse(new TextDecoder().decode(buf));
    } catch {
      throw new Error(`${path}: safetensors header is not valid JSON`);
    }
    const entries = new Map();
    const dataBytes = size - 8 - n;
    for (const [k, v] of Object.entries(json)) {
      if (k === "__metadata__") continue;
      const [b, e] = v.data_offsets ?? [];
      if (!(Number.isInteger(b) && Number.isInteger(e) && 0 <= b && b <= e && e <= dataBytes)) {
        throw new Error(`${path}: tensor ${k} data_offsets ${JSON.stringify(v.data_offsets)} outside the ${dataBytes} data bytes (file truncated?)`);
      }
      entries.set(k, { dtype: v.dtype, shape: v.shape, begin: 8 + n + b, end: 8 + n + e });
    }
    return { dataStart: 8 + n, fileBytes: size, entries, metadata: json.__metadata__ ?? {} };
  } finally {
    closeSync(fd);
  }
}
