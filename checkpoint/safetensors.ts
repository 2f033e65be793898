// safetensors reader/writer (format: https://github.com/huggingface/safetensors).
// File = u64 LE header length N | N bytes of JSON header (padded with spaces) | raw data.
// Header: {"__metadata__": {str: str}?, name: {"dtype", "shape", "data_offsets": [begin, end]}}
// with offsets relative to the data start. We validate as the Rust library does (size bound,
// offsets in file, no overlap, full coverage, shape x dtype = bytes) and name the file and
// tensor in every error. Reads go through pread on a descriptor (no whole-file load), writes
// stream tensor by tensor to a descriptor, so sharded checkpoints of any size work.
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from "node:fs";

export type StDtype =
  | "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "I16" | "U16" | "F16" | "BF16"
  | "I32" | "U32" | "F32" | "I64" | "U64" | "F64";

/** Bytes per element of each safetensors dtype. */
export const DTYPE_BYTES: Record<StDtype, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
};

export interface TensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** Byte offsets [begin, end) relative to the start of the data section. */
  offsets: [number, number];
}

/** Headers larger than this are refused before allocation (same bound as the Rust library). */
const MAX_HEADER = 100_000_000;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** An open safetensors file: validated header + positional reads. Call close() when done. */
export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  /** Absolute file offset of the data section (8 + header length). */
  readonly dataStart: number;
  private fd: number;

  constructor(readonly path: string) {
    this.fd = openSync(path, "r");
    try {
      this.dataStart = this.parseHeader();
    } catch (e) {
      closeSync(this.fd);
      throw e;
    }
  }

  private fail(msg: string): never {
    throw new Error(`safetensors ${this.path}: ${msg}`);
  }

  private parseHeader(): number {
    const size = fstatSync(this.fd).size;
    if (size < 8) this.fail(`file is ${size} bytes, shorter than the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readSync(this.fd, lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER)) this.fail(`header length ${n} exceeds the ${MAX_HEADER}-byte limit (corrupt file?)`);
    const hlen = Number(n);
    if (8 + hlen > size) this.fail(`header length ${hlen} runs past the end of the ${size}-byte file (truncated?)`);
    const hbuf = Buffer.alloc(hlen);
    readSync(this.fd, hbuf, 0, hlen, 8);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(hbuf));
    } catch (e) {
      this.fail(`header is not valid UTF-8 JSON: ${(e as Error).message}`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) this.fail("header is not a JSON object");
    const dataLen = size - 8 - hlen;
    const spans: TensorInfo[] = [];
    for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") {
        if (typeof v !== "object" || v === null) this.fail("__metadata__ is not an object of strings");
        for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
          if (typeof s !== "string") this.fail(`__metadata__.${k} is not a string`);
          this.metadata[k] = s;
        }
        continue;
      }
      const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const where = `tensor "${name}"`;
      if (typeof t !== "object" || t === null) this.fail(`${where}: entry is not an object`);
      if (typeof t.dtype !== "string" || !(t.dtype in DTYPE_BYTES))
        this.fail(`${where}: unknown dtype ${JSON.stringify(t.dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(", ")})`);
      if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        this.fail(`${where}: shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`);
      const o = t.data_offsets;
      if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => Number.isSafeInteger(x) && x >= 0) || o[0] > o[1])
        this.fail(`${where}: data_offsets ${JSON.stringify(o)} is not [begin, end] with 0 <= begin <= end`);
      const dtype = t.dtype as StDtype;
      const shape = t.shape as number[];
      const want = numel(shape) * DTYPE_BYTES[dtype];
      if (o[1] - o[0] !== want)
        this.fail(`${where}: shape [${shape}] x ${dtype} needs ${want} bytes but data_offsets [${o}] span ${o[1] - o[0]}`);
      if (o[1] > dataLen)
        this.fail(`${where}: data_offsets [${o}] run past the ${dataLen}-byte data section (truncated file?)`);
      const info: TensorInfo = { name, dtype, shape, offsets: [o[0], o[1]] };
      this.tensors.set(name, info);
      spans.push(info);
    }
    // Offsets sorted must tile [0, dataLen) exactly: no overlap, no hole, nothing trailing.
    spans.sort((a, b) => a.offsets[0] - b.offsets[0] || a.offsets[1] - b.offsets[1]);
    let pos = 0;
    let prev = "(start of data)";
    for (const s of spans) {
      if (s.offsets[0] < pos) this.fail(`tensor "${s.name}" at [${s.offsets}] overlaps "${prev}" (ends at ${pos})`);
      if (s.offsets[0] > pos) this.fail(`hole of ${s.offsets[0] - pos} bytes before tensor "${s.name}" at [${s.offsets}]`);
      pos = s.offsets[1];
      prev = s.name;
    }
    if (pos !== dataLen) this.fail(`tensors cover ${pos} bytes but the data section holds ${dataLen} (trailing bytes or truncated)`);
    return 8 + hlen;
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) this.fail(`no tensor "${name}" (has ${this.tensors.size} tensors)`);
    return t;
  }

  /** Raw little-endian bytes of one tensor. */
  readRaw(name: string): Uint8Array {
    const t = this.info(name);
    const len = t.offsets[1] - t.offsets[0];
    const buf = new Uint8Array(len);
    let got = 0;
    while (got < len) {
      const n = readSync(this.fd, buf, got, len - got, this.dataStart + t.offsets[0] + got);
      if (n <= 0) this.fail(`tensor "${name}": short read at byte ${got} of ${len}`);
      got += n;
    }
    return buf;
  }

  /** Tensor converted to f32 (F32/BF16/F16/F64 and integer dtypes), into `out` when given. */
  readF32(name: string, out?: Float32Array): Float32Array {
    const t = this.info(name);
    const n = numel(t.shape);
    if (out && out.length !== n) this.fail(`tensor "${name}": destination holds ${out.length} values, tensor has ${n}`);
    const raw = this.readRaw(name);
    return decodeToF32(raw, t.dtype, out ?? new Float32Array(n), `${this.path}: tensor "${name}"`);
  }

  /**
   * Elements [from, from + out.length) of the flattened tensor, converted to f32, read with
   * positional reads of just those bytes (a rank loads its shard, never the whole tensor). F32
   * lands in `out` directly; other dtypes go through a bounded staging buffer (RANGE_CHUNK).
   */
  readF32Range(name: string, from: number, out: Float32Array): Float32Array {
    const t = this.info(name);
    const n = numel(t.shape);
    if (!Number.isSafeInteger(from) || from < 0 || from + out.length > n)
      this.fail(`tensor "${name}": range [${from}, ${from + out.length}) is outside its ${n} elements`);
    const eb = DTYPE_BYTES[t.dtype];
    const base = this.dataStart + t.offsets[0] + from * eb;
    const what = `${this.path}: tensor "${name}"`;
    if (t.dtype === "F32") {
      this.readAt(new Uint8Array(out.buffer, out.byteOffset, out.length * 4), base, name);
      return out;
    }
    const step = Math.max(1, Math.floor(RANGE_CHUNK / eb));
    const raw = new Uint8Array(Math.min(out.length, step) * eb);
    for (let i = 0; i < out.length; i += step) {
      const m = Math.min(step, out.length - i);
      const bytes = raw.subarray(0, m * eb);
      this.readAt(bytes, base + i * eb, name);
      decodeToF32(bytes, t.dtype, out.subarray(i, i + m), what);
    }
    return out;
  }

  /** Fill `buf` from absolute file offset `pos` (pread until full). */
  private readAt(buf: Uint8Array, pos: number, name: string): void {
    let got = 0;
    while (got < buf.length) {
      const n = readSync(this.fd, buf, got, buf.length - got, pos + got);
      if (n <= 0) this.fail(`tensor "${name}": short read at file offset ${pos + got}`);
      got += n;
    }
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** Staging bytes per ranged read of a non-F32 tensor (bounded memory while converting). */
const RANGE_CHUNK = 4 << 20;

/** Decode little-endian bytes of `dtype` into f32. */
export function decodeToF32(raw: Uint8Array, dtype: StDtype, out: Float32Array, what: string): Float32Array {
  const n = out.length;
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case "F32":
      new Uint8Array(out.buffer, out.byteOffset, n * 4).set(raw);
      return out;
    case "BF16": {
      const u = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
      return out;
    }
    case "F16":
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(2 * i, true));
      return out;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      return out;
    case "I64":
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
      return out;
    case "U8": case "BOOL":
      for (let i = 0; i < n; i++) out[i] = raw[i];
      return out;
    default:
      throw new Error(`${what}: cannot convert dtype ${dtype} to f32`);
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** f32 -> bf16 bits, round to nearest even (as torch's .to(bfloat16)); NaN stays NaN. */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 -> f16 bits, round to nearest even, overflow to inf, subnormals kept. */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) { r = 0; e++; if (e >= 31) return sign | 0x7c00; }
  }
  return sign | (e << 10) | r;
}

/** Encode f32 values as little-endian bytes of F32, BF16 or F16. */
export function encodeFromF32(src: Float32Array, dtype: StDtype): Uint8Array {
  const n = src.length;
  if (dtype === "F32") return new Uint8Array(src.buffer.slice(src.byteOffset, src.byteOffset + 4 * n));
  const out = new Uint16Array(n);
  if (dtype === "BF16") for (let i = 0; i < n; i++) out[i] = f32ToBf16(src[i]);
  else if (dtype === "F16") for (let i = 0; i < n; i++) out[i] = f32ToF16(src[i]);
  else throw new Error(`safetensors: cannot write f32 data as ${dtype} (expected F32, BF16 or F16)`);
  return new Uint8Array(out.buffer);
}

// ---------------------------------------------------------------- writing

export interface TensorSpec {
  name: string;
  dtype: StDtype;
  shape: number[];
}

/** Header bytes for tensors laid out in the given order, padded with spaces to 8 bytes (as the
 *  Rust library does), plus each tensor's data offsets. */
export function encodeHeader(specs: TensorSpec[], metadata?: Record<string, string>): { bytes: Uint8Array; infos: TensorInfo[] } {
  const obj: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) obj.__metadata__ = metadata;
  const infos: TensorInfo[] = [];
  let pos = 0;
  for (const s of specs) {
    if (s.name === "__metadata__" || s.name in obj) throw new Error(`safetensors: duplicate or reserved tensor name "${s.name}"`);
    if (!(s.dtype in DTYPE_BYTES)) throw new Error(`safetensors: tensor "${s.name}" has unknown dtype ${s.dtype}`);
    const len = numel(s.shape) * DTYPE_BYTES[s.dtype];
    obj[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [pos, pos + len] };
    infos.push({ name: s.name, dtype: s.dtype, shape: s.shape, offsets: [pos, pos + len] });
    pos += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const hlen = Math.ceil(json.length / 8) * 8;
  const bytes = new Uint8Array(8 + hlen).fill(0x20);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(hlen), true);
  bytes.set(json, 8);
  return { bytes, infos };
}

function writeAll(fd: number, buf: Uint8Array, what: string): void {
  let off = 0;
  while (off < buf.length) {
    const n = writeSync(fd, buf, off, buf.length - off);
    if (n <= 0) throw new Error(`${what}: write returned ${n}`);
    off += n;
  }
}

/** Streams one safetensors file: the header is written at open from the specs, then each
 *  tensor's data in spec order (f32 values converted to the spec dtype in bounded chunks,
 *  or raw bytes of exactly the right length). close() checks every tensor was written. */
export class SafetensorsWriter {
  private fd: number;
  private next = 0;
  readonly infos: TensorInfo[];

  constructor(readonly path: string, specs: TensorSpec[], metadata?: Record<string, string>) {
    const { bytes, infos } = encodeHeader(specs, metadata);
    this.infos = infos;
    this.fd = openSync(path, "w");
    writeAll(this.fd, bytes, `safetensors ${path}: header`);
  }

  write(name: string, data: Float32Array | Uint8Array): void {
    const t = this.infos[this.next];
    const where = `safetensors ${this.path}: tensor "${name}"`;
    if (!t || t.name !== name) throw new Error(`${where}: written out of order (expected "${t?.name ?? "(none: all written)"}")`);
    const bytes = t.offsets[1] - t.offsets[0];
    if (data instanceof Float32Array) {
      if (data.length !== numel(t.shape)) throw new Error(`${where}: ${data.length} values for shape [${t.shape}]`);
      const CHUNK = 1 << 20;
      for (let i = 0; i < data.length; i += CHUNK) writeAll(this.fd, encodeFromF32(data.subarray(i, i + CHUNK), t.dtype), where);
    } else {
      if (data.length !== bytes) throw new Error(`${where}: ${data.length} raw bytes, expected ${bytes}`);
      writeAll(this.fd, data, where);
    }
    this.next++;
  }

  close(opts: { fsync?: boolean } = {}): void {
    if (this.fd < 0) return;
    const missing = this.infos.slice(this.next).map((t) => t.name);
    if (opts.fsync) fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
    if (missing.length) throw new Error(`safetensors ${this.path}: closed with ${missing.length} tensors unwritten: ${missing.slice(0, 5).join(", ")}`);
  }
}

/** Write a whole file at once: each tensor's f32 data (or raw bytes) stored as its dtype. */
export function writeSafetensors(
  path: string,
  tensors: (TensorSpec & { data: Float32Array | Uint8Array })[],
  metadata?: Record<string, string>,
): void {
  const w = new SafetensorsWriter(path, tensors, metadata);
  for (const t of tensors) w.write(t.name, t.data);
  w.close();
}

// ---------------------------------------------------------------- Hugging Face model folders

export const HF_INDEX = "model.safetensors.index.json";

/** HF shard name: model-00001-of-00003.safetensors (k is 1-based). */
export function shardName(k: number, n: number): string {
  return `model-${String(k).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
}

/** The weights of a HF model folder: `model.safetensors`, or the shards listed by
 *  `model.safetensors.index.json` ({"metadata": {"total_size"}, "weight_map": {name: file}}). */
export class SafetensorsFolder {
  readonly files: SafetensorsFile[] = [];
  /** tensor name -> the open file holding it */
  private byName = new Map<string, SafetensorsFile>();

  constructor(readonly dir: string) {
    const indexPath = `${dir}/${HF_INDEX}`;
    const single = `${dir}/model.safetensors`;
    try {
      if (existsSync(indexPath)) {
        let index: { weight_map?: Record<string, string> };
        try {
          index = JSON.parse(readFileSync(indexPath, "utf8"));
        } catch (e) {
          throw new Error(`${indexPath}: not valid JSON: ${(e as Error).message}`);
        }
        const map = index.weight_map;
        if (!map || typeof map !== "object") throw new Error(`${indexPath}: no "weight_map" object`);
        const open = new Map<string, SafetensorsFile>();
        for (const [name, file] of Object.entries(map)) {
          let f = open.get(file);
          if (!f) {
            if (file.includes("/") || file.includes("\\")) throw new Error(`${indexPath}: shard "${file}" must be a plain file name`);
            f = new SafetensorsFile(`${dir}/${file}`);
            open.set(file, f);
            this.files.push(f);
          }
          if (!f.tensors.has(name)) throw new Error(`${indexPath}: weight_map puts "${name}" in ${file}, which has no such tensor`);
          this.byName.set(name, f);
        }
      } else if (existsSync(single)) {
        const f = new SafetensorsFile(single);
        this.files.push(f);
        for (const name of f.tensors.keys()) this.byName.set(name, f);
      } else {
        throw new Error(`${dir}: no model.safetensors and no ${HF_INDEX}`);
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  info(name: string): TensorInfo | undefined {
    return this.byName.get(name)?.tensors.get(name);
  }

  readF32(name: string, out?: Float32Array): Float32Array {
    const f = this.byName.get(name);
    if (!f) throw new Error(`${this.dir}: no tensor "${name}" in the model weights`);
    return f.readF32(name, out);
  }

  /** Elements [from, from + out.length) of a tensor as f32 (ranged read, see SafetensorsFile). */
  readF32Range(name: string, from: number, out: Float32Array): Float32Array {
    const f = this.byName.get(name);
    if (!f) throw new Error(`${this.dir}: no tensor "${name}" in the model weights`);
    return f.readF32Range(name, from, out);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** Write tensors as a HF model folder: one `model.safetensors` when it fits in `maxShardBytes`,
 *  else `model-0000k-of-0000n.safetensors` shards (tensors never split, order kept) + index. */
export function writeHfWeights(
  dir: string,
  tensors: (TensorSpec & { data: Float32Array })[],
  maxShardBytes = 5 * 2 ** 30,
  metadata: Record<string, string> = { format: "pt" },
): string[] {
  const shards: (typeof tensors)[] = [[]];
  let cur = 0;
  let total = 0;
  for (const t of tensors) {
    const b = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (cur > 0 && cur + b > maxShardBytes) { shards.push([]); cur = 0; }
    shards[shards.length - 1].push(t);
    cur += b;
    total += b;
  }
  if (shards.length === 1) {
    writeSafetensors(`${dir}/model.safetensors`, tensors, metadata);
    return ["model.safetensors"];
  }
  const names = shards.map((_, k) => shardName(k + 1, shards.length));
  const weightMap: Record<string, string> = {};
  shards.forEach((s, k) => {
    writeSafetensors(`${dir}/${names[k]}`, s, metadata);
    for (const t of s) weightMap[t.name] = names[k];
  });
  writeFileSync(`${dir}/${HF_INDEX}`, JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n");
  return [...names, HF_INDEX];
}
