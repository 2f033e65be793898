// The coordinator side of a save: once every rank has reported its files durable, check the
// reports tile every tensor exactly once and write metadata.json atomically (temp, fsync,
// rename, fsync folder). That rename is the commit; before it the folder does not exist as a
// checkpoint. Also: list committed checkpoints and resolve `load_checkpoint_path: auto`.

import { closeSync, existsSync, fsyncSync, linkSync, openSync, readdirSync, rmSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import {
  FORMAT, FORMAT_VERSION, METADATA_FILE, type Metadata, type TensorMeta, parseStepDir,
} from "./format.ts";
import { commitState } from "./committed.ts";
import { coverageErrors } from "./plan.ts";
import { type RankReport, fsyncDir } from "./rank_writer.ts";

export interface CommitInput {
  dir: string;
  step: number;
  epoch: number;
  worldSize: number;
  mesh: Record<string, number>;
  reports: readonly RankReport[];
  /** The job's epoch as its record says now (the coordinator reads OUTPUT_DIR/job.json), or null
   *  when unknown. Newer than `epoch`: this coordinator was declared dead and another took the job
   *  over (a zombie woken from SIGSTOP); its commit is refused. Checked just before the commit. */
  currentEpoch?: () => number | null;
  /** Fault injection for the kill tests: runs after the temp file is durable, before the rename. */
  beforeRename?: () => void;
}

/** A commit refused because a newer epoch owns the job: the coordinator must stop, not go on. */
export class StaleEpochError extends Error {}

/** Builds the metadata from all ranks' reports; throws listing every missing rank or bad tiling. */
export function buildMetadata(input: Omit<CommitInput, "dir" | "beforeRename" | "currentEpoch">): Metadata {
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
  const final = join(input.dir, METADATA_FILE);
  const fence = () => {
    const cur = input.currentEpoch?.() ?? null;
    if (cur !== null && cur > input.epoch) {
      throw new StaleEpochError(`commit step ${input.step}: refused: this coordinator's epoch ${input.epoch} is older than the job's current epoch ${cur}: another coordinator took the job over; this one stops`);
    }
    if (!existsSync(final)) return;
    const st = commitState(input.dir);
    if (st.committed) throw new Error(`commit step ${input.step}: ${final} already exists (committed by epoch ${st.meta.epoch}); a commit is never overwritten`);
    rmSync(final, { force: true }); // damaged (committed.ts): not a commit, replaced by this one
  };
  fence();
  for (const [name, f] of Object.entries(meta.files)) {
    const p = join(input.dir, name);
    const size = existsSync(p) ? statSync(p).size : -1;
    if (size !== f.bytes) throw new Error(`commit step ${input.step}: rank ${f.rank} file ${p} is ${size < 0 ? "missing" : `${size} bytes`}, reported ${f.bytes}`);
  }
  const tmp = join(input.dir, `${METADATA_FILE}.tmp-${process.pid}`);
  try {
    const fd = openSync(tmp, "w");
    try {
      const bytes = new TextEncoder().encode(JSON.stringify(meta, null, 1));
      for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    rmSync(tmp, { force: true }); // (a full disk) no half-written commit record stays behind
    const err = e as NodeJS.ErrnoException;
    throw new Error(`commit step ${input.step}: writing ${tmp}: ${err.code ? `${err.code}: ` : ""}${err.message.replace(/^[A-Z]+: /, "")}`);
  }
  input.beforeRename?.();
  try {
    fence();
    // link, not rename: it fails (EEXIST) rather than replace a metadata.json another coordinator
    // committed since the check above; the commit is the link, the temp name is then dropped
    linkSync(tmp, final);
  } catch (e) {
    rmSync(tmp, { force: true });
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new Error(`commit step ${input.step}: ${final} was committed by another coordinator meanwhile; a commit is never overwritten`);
    throw e;
  }
  rmSync(tmp, { force: true });
  fsyncDir(input.dir);
  return meta;
}

const EPOCH_FILE = /^(?:model|optim|extra_state)_e(\d+)_rank_\d{5}\.(?:safetensors|json)$/;

/**
 * After the commit of `dir` under `meta.epoch`: remove the rank files of OLDER epochs that the
 * commit does not list — what a save of the same step left when its epoch was fenced out or its
 * coordinator died before committing it (the step is redone and saved again under the new epoch).
 * They were never part of a commit and nothing loads them; files the commit lists are kept
 * whatever epoch their names carry (a save in flight when a coordinator adopted its ranks is
 * committed under the new epoch with the old epoch's names), and so are a newer epoch's.
 * Returns the names removed.
 */
export function removeStaleEpochFiles(dir: string, meta: Metadata): string[] {
  // the metadata.json on disk is the commit: when it is not `meta` (damaged, or another
  // coordinator's), the files it lists are kept too, and none at all when it cannot be read
  const onDisk = commitState(dir);
  if (!onDisk.committed) return [];
  const removed: string[] = [];
  for (const name of readdirSync(dir)) {
    const m = EPOCH_FILE.exec(name);
    if (!m || name in meta.files || name in onDisk.meta.files || Number(m[1]) >= meta.epoch) continue;
    rmSync(join(dir, name), { force: true });
    removed.push(name);
  }
  return removed.sort();
}

/** A `global_step_N` folder that is not a commit (committed.ts), and why. */
export interface Skipped {
  step: number;
  dir: string;
  why: string;
}

/** Committed checkpoints under output_dir/checkpoints, oldest first. Folders that are not
 *  committed (commitState: an interrupted save, damaged metadata) are never loaded; they are
 *  passed to `onSkip` so a caller can say which and why. */
export function listCommitted(checkpointsDir: string, onSkip?: (s: Skipped) => void): { step: number; dir: string }[] {
  if (!existsSync(checkpointsDir)) return [];
  const out: { step: number; dir: string }[] = [];
  for (const name of readdirSync(checkpointsDir)) {
    const step = parseStepDir(name);
    if (step === null) continue;
    const dir = join(checkpointsDir, name);
    const st = commitState(dir);
    if (st.committed) out.push({ step, dir });
    else onSkip?.({ step, dir, why: st.why });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** `train.load_checkpoint_path`: "auto" = newest committed under output_dir/checkpoints (null when
 *  there is none: a fresh start), warning about every newer folder it skipped and why; a path
 *  must be a committed checkpoint folder (one line naming it otherwise). */
export function resolveLoadPath(loadPath: string | null | undefined, outputDir: string, warn?: (msg: string) => void): string | null {
  if (!loadPath) return null;
  if (loadPath === "auto") {
    const skipped: Skipped[] = [];
    const found = listCommitted(join(outputDir, "checkpoints"), (s) => skipped.push(s)).at(-1) ?? null;
    for (const s of skipped.sort((a, b) => a.step - b.step)) {
      if (found && s.step < found.step) continue; // older than the one loaded: nothing is lost by it
      warn?.(`load_checkpoint_path auto: skipped ${s.dir}, newer than ${found ? found.dir : "any commit"}: ${s.why} (not a commit: an interrupted save or damaged metadata)`);
    }
    return found?.dir ?? null;
  }
  const st = commitState(loadPath);
  if (!st.committed) {
    throw new Error(`load_checkpoint_path ${loadPath}: ${st.why}: not a committed checkpoint; refusing to load it`);
  }
  return loadPath;
}

/** Committed steps this run would save again: start < step <= total with `due(step)`. A commit is
 *  never overwritten, so such a run is refused at its start rather than at that save. */
export function committedClashes(outputDir: string, start: number, total: number, due: (step: number) => boolean): { step: number; dir: string }[] {
  return listCommitted(join(outputDir, "checkpoints")).filter((c) => c.step > start && c.step <= total && due(c.step));
}
