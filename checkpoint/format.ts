// The on-disk format of a checkpoint: folder and file names, the metadata JSON schema, and the
// JSON codec for extra state. A checkpoint folder is committed if and only if `metadata.json`
// is present and valid: it is written last, atomically, by the coordinator (commit.ts).
//
//   output_dir/checkpoints/global_step_N/
//     model_rank_00000.safetensors    rank 0's pieces of the parameters (f32)
//     optim_rank_00000.safetensors    rank 0's pieces of the optimizer state (f32)
//     extra_state_rank_00000.json     rank 0's step, scheduler, dataloader, RNG, counters
//     ...                             the same three files for every rank (with the job's epoch
//                                     in the name when given: model_e2_rank_00000.safetensors)
//     metadata.json                   the commit record: every global tensor -> its pieces
// The epoch in a file's name is the one its rank had when the save was commanded (after an
// adoption, the new one); metadata.json's `epoch` is the one that committed it. They differ only
// for a save in flight while a coordinator adopted its ranks. Loading reads the files metadata.json
// lists, whatever their names; the commit removes older epochs' files it does not list (commit.ts).
//   output_dir/model_assets/           config.json + tokenizer files (assets.ts)

export const FORMAT = "veomni-ts-checkpoint";
export const FORMAT_VERSION = 1;
export const METADATA_FILE = "metadata.json";

export type Group = "model" | "optim";
export type DType = "F32";

export function stepDirName(step: number): string {
  return `global_step_${step}`;
}
const STEP_DIR = /^global_step_(\d+)$/;
/** The step of a `global_step_N` folder name, or null for any other name. */
export function parseStepDir(name: string): number | null {
  const m = STEP_DIR.exec(name);
  return m ? Number(m[1]) : null;
}
/** With the job's epoch in the name (`model_e2_rank_00000.safetensors`), a fenced-out writer of an
 *  older epoch still saving the same step can never overwrite the new epoch's files. */
export function rankFileName(group: Group, rank: number, epoch?: number): string {
  return `${group}${epoch === undefined ? "" : `_e${epoch}`}_rank_${String(rank).padStart(5, "0")}.safetensors`;
}
export function extraFileName(rank: number, epoch?: number): string {
  return `extra_state${epoch === undefined ? "" : `_e${epoch}`}_rank_${String(rank).padStart(5, "0")}.json`;
}

/** One contiguous run of a global tensor, flattened row-major: elements [start, start+length). */
export interface PieceRef {
  rank: number;
  file: string;
  /** safetensors key inside `file` (the tensor name, or `name:start-end` for a partial piece). */
  key: string;
  start: number;
  length: number;
  /** Absolute byte offset of the piece's data in `file` (header included), for pread. */
  byteOffset: number;
  /** CRC-32 (zlib polynomial, Bun.hash.crc32) of the piece's bytes. */
  crc32: number;
}

export interface TensorMeta {
  group: Group;
  shape: number[];
  dtype: DType;
  /** Sorted by start; together they cover [0, numel) exactly once (checked at commit and load). */
  pieces: PieceRef[];
}

export interface FileMeta {
  rank: number;
  bytes: number;
  /** CRC-32 of the whole file; piece CRCs catch corruption in what a load actually reads. */
  crc32: number;
}

/** metadata.json, version 1. */
export interface Metadata {
  format: typeof FORMAT;
  version: number;
  step: number;
  /** Job generation that wrote it (a fenced-out epoch cannot commit). */
  epoch: number;
  world_size: number;
  /** Mesh axes, outermost first, e.g. {dp_shard: 4}; informational for resharding. */
  mesh: Record<string, number>;
  created: string;
  /** Every file of the checkpoint (model, optim, extra state of every rank). */
  files: Record<string, FileMeta>;
  /** Global tensors by name: model parameters (HF names) and optimizer state
   *  (`optim.exp_avg.<param>`, `optim.exp_avg_sq.<param>`). */
  tensors: Record<string, TensorMeta>;
  /** Extra-state file of each rank, index = rank. */
  extra: string[];
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Key of a piece inside its rank file: the bare name when the piece is the whole tensor. */
export function pieceKey(name: string, shape: readonly number[], start: number, length: number): string {
  return start === 0 && length === numelOf(shape) ? name : `${name}:${start}-${start + length}`;
}

/** Checks the parts of metadata.json every reader relies on; throws naming the file and field. */
export function parseMetadata(text: string, path: string): Metadata {
  let m: Metadata;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (m === null || typeof m !== "object" || m.format !== FORMAT) {
    throw new Error(`${path}: not a ${FORMAT} metadata file (format=${JSON.stringify((m as any)?.format)})`);
  }
  if (m.version !== FORMAT_VERSION) {
    throw new Error(`${path}: unknown checkpoint format version ${JSON.stringify(m.version)}, this build reads version ${FORMAT_VERSION}`);
  }
  for (const k of ["step", "epoch", "world_size"] as const) {
    if (!Number.isInteger(m[k]) || m[k] < 0) throw new Error(`${path}: field ${k} must be a non-negative integer, got ${JSON.stringify(m[k])}`);
  }
  if (typeof m.tensors !== "object" || typeof m.files !== "object" || !Array.isArray(m.extra) || m.extra.length !== m.world_size) {
    throw new Error(`${path}: expected objects tensors/files and extra[world_size=${m.world_size}]`);
  }
  return m;
}

// Extra state is JSON with typed arrays and bigints tagged, so a dataloader buffer (Int32Array
// token ids) or a 64-bit RNG state survives exactly.
const TYPED: Record<string, new (b: ArrayBuffer) => ArrayBufferView> = {
  Int32Array, Uint32Array, Float32Array, Float64Array, Uint8Array, Int8Array, Int16Array, Uint16Array,
  BigInt64Array, BigUint64Array,
};
export function encodeExtra(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (typeof v === "bigint") return { $bigint: v.toString() };
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      const name = v.constructor.name;
      if (!(name in TYPED)) throw new Error(`extra state: cannot encode ${name}`);
      const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      return { $typed: name, b64: Buffer.from(bytes).toString("base64") };
    }
    if (typeof v === "number" && !Number.isFinite(v)) return { $number: String(v) };
    return v;
  });
}
export function decodeExtra(text: string): unknown {
  return JSON.parse(text, (_k, v) => {
    if (v && typeof v === "object") {
      if (typeof v.$bigint === "string") return BigInt(v.$bigint);
      if (typeof v.$number === "string") return Number(v.$number);
      if (typeof v.$typed === "string") {
        const bytes = Buffer.from(v.b64, "base64");
        const copy = new Uint8Array(bytes.byteLength);
        copy.set(bytes);
        return new TYPED[v.$typed](copy.buffer);
      }
    }
    return v;
  });
}
