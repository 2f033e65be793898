// The coordinator side of a save: once every rank has reported its files durable, check the
// reports tile every tensor exactly once and write metadata.json atomically (temp, fsync,
// rename, fsync folder). That rename is the commit; before it the folder does not exist as a
// checkpoint. Also: list committed checkpoints and resolve `load_checkpoint_path: auto`.

import { closeSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import {
  FORMAT, FORMAT_VERSION, METADATA_FILE, type Metadata, type TensorMeta, parseMetadata, parseStepDir,
} from "./format.ts";
import { coverageErrors } from "./plan.ts";
import { type RankReport, fsyncDir } from "./rank_writer.ts";

export interface CommitInput {
  dir: string;
  step: number;
  epoch: number;
  worldSize: number;
  mesh: Record<string, number>;
  reports: readonly RankReport[];
  /** Fault injection for the kill tests: runs after the temp file is durable, before the rename. */
  beforeRename?: () => void;
}

/** Builds the metadata from all ranks' reports; throws listing every missing rank or bad tiling. */
export function buildMetadata(input: Omit<CommitInput, "dir" | "beforeRename">): Metadata {
  const { step, epoch, worldSize, reports } = input;
  const seen = new Map<number, RankReport>();
  for (const r of reports) {
    if (r.step !== step) throw new Error(`commit step ${step}: rank ${r.rank} reported step ${r.step}`);
    if (seen.has(r.rank)) throw new Error(`commit step ${step}: rank ${r.rank} reported twice`);
    if (!(r.rank >= 0 && r.rank < worldSize)) throw new Error(`commit step ${step}: report from rank ${r.rank} outside world size ${worldSize}`);
    seen.set(r.rank, r);
  }
  const missing = [...Array(worldSize).keys()].filter((r) => !seen.has(r));
  if (missing.length) throw new Error(`commit step ${step}: no report from rank(s) ${missing.join(", ")} of ${worldSize}; checkpoint not committed`);

  const tensors: Record<string, TensorMeta> = {};
  const errors: string[] = [];
  for (const r of reports) {
    for (const p of r.pieces) {
      const t = (tensors[p.name] ??= { group: p.group, shape: p.shape, dtype: "F32", pieces: [] });
      if (t.shape.join() !== p.shape.join() || t.group !== p.group) {
        errors.push(`${p.name}: rank ${r.rank} says ${p.group} [${p.shape}], another rank ${t.group} [${t.shape}]`);
      }
      t.pieces.push(p.ref);
    }
  }
  for (const t of Object.values(tensors)) t.pieces.sort((a, b) => a.start - b.start);
  const shapes = new Map(Object.entries(tensors).map(([n, t]) => [n, t.shape]));
  const runs = Object.entries(tensors).flatMap(([name, t]) => t.pieces.map((p) => ({ name, start: p.start, length: p.length, rank: p.rank })));
  errors.push(...coverageErrors(shapes, runs));
  if (errors.length) throw new Error(`commit step ${step}: pieces do not tile the tensors exactly once:\n  ${errors.join("\n  ")}`);
  return {
    format: FORMAT, version: FORMAT_VERSION, step, epoch, world_size: worldSize, mesh: input.mesh,
    created: new Date().toISOString(),
    files: Object.assign({}, ...reports.map((r) => r.files)),
    tensors,
    extra: [...Array(worldSize).keys()].map((r) => seen.get(r)!.extra),
  };
}

/** Commits a checkpoint folder. Every reported file must be on disk with its reported size. */
export function commitCheckpoint(input: CommitInput): Metadata {
  const meta = buildMetadata(input);
  for (const [name, f] of Object.entries(meta.files)) {
    const p = join(input.dir, name);
    const size = existsSync(p) ? statSync(p).size : -1;
    if (size !== f.bytes) throw new Error(`commit step ${input.step}: rank ${f.rank} file ${p} is ${size < 0 ? "missing" : `${size} bytes`}, reported ${f.bytes}`);
  }
  const tmp = join(input.dir, `${METADATA_FILE}.tmp-${process.pid}`);
  const fd = openSync(tmp, "w");
  try {
    const bytes = new TextEncoder().encode(JSON.stringify(meta, null, 1));
    for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  input.beforeRename?.();
  renameSync(tmp, join(input.dir, METADATA_FILE));
  fsyncDir(input.dir);
  return meta;
}

/** Committed checkpoints under output_dir/checkpoints, oldest first. Folders without a valid
 *  metadata.json (a save that never committed) are skipped, never loaded. */
export function listCommitted(checkpointsDir: string): { step: number; dir: string }[] {
  if (!existsSync(checkpointsDir)) return [];
  const out: { step: number; dir: string }[] = [];
  for (const name of readdirSync(checkpointsDir)) {
    const step = parseStepDir(name);
    if (step === null) continue;
    const dir = join(checkpointsDir, name);
    const mp = join(dir, METADATA_FILE);
    if (!existsSync(mp)) continue;
    try {
      if (parseMetadata(readFileSync(mp, "utf8"), mp).step === step) out.push({ step, dir });
    } catch {
      continue; // unreadable metadata is not a commit; an explicit load of it reports why
    }
  }
  return out.sort((a, b) => a.step - b.step);
}

/** `train.load_checkpoint_path`: "auto" = newest committed under output_dir/checkpoints (null when
 *  there is none: a fresh start); a path must be a committed checkpoint folder. */
export function resolveLoadPath(loadPath: string | null | undefined, outputDir: string): string | null {
  if (!loadPath) return null;
  if (loadPath === "auto") return listCommitted(join(outputDir, "checkpoints")).at(-1)?.dir ?? null;
  if (!existsSync(join(loadPath, METADATA_FILE))) {
    throw new Error(`load_checkpoint_path ${loadPath}: no ${METADATA_FILE}, so it is not a committed checkpoint (an interrupted save?); refusing to load it`);
  }
  return loadPath;
}
