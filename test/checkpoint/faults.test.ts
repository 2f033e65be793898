// Checkpoint faults found by breaking it on purpose: a flipped byte in a shard's safetensors header
// (whole-file CRC, checked on resume and merge), `auto` skipping damaged newer folders (named, with
// the reason), one definition of "committed" for readers and the writer, clashes with committed
// checkpoints found at start, and a full disk (the error names the file; nothing half-written stays).
import { beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { commitCheckpoint, committedClashes, resolveLoadPath } from "../../checkpoint/commit.ts";
import { commitState } from "../../checkpoint/committed.ts";
import { METADATA_FILE, rankFileName } from "../../checkpoint/format.ts";
import { loadShard } from "../../checkpoint/load.ts";
import { mergeToHf } from "../../checkpoint/merge.ts";
import { writeModelAssets } from "../../checkpoint/assets.ts";
import type { Piece } from "../../checkpoint/plan.ts";
import { layoutRank, stagePieces, writeRank } from "../../checkpoint/rank_writer.ts";
import { expectedShapes, fillModel, firstDiff, fsdpPieces, saveAll, smallModel } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real files and a CLI process on a shared 2-core machine

const ROOT = join(import.meta.dir, "..", "..");
const units = smallModel();
const full = fillModel(units, 5);
const tmp = tempDir("faults");
const good = join(tmp, "good", "global_step_3");
beforeAll(async () => { await saveAll(good, 3, [0, 1].map((r) => fsdpPieces(units, 2, r, full))); });

let n = 0;
function copy(step = 3, parent = join(tmp, `case${n++}`)): string {
  const dir = join(parent, "checkpoints", `global_step_${step}`);
  cpSync(good, dir, { recursive: true });
  if (step !== 3) {
    const mp = join(dir, METADATA_FILE);
    writeFileSync(mp, readFileSync(mp, "utf8").replace('"step": 3', `"step": ${step}`));
  }
  return dir;
}

/** Flip one byte inside the JSON header of rank 0's model shard: no piece CRC covers it. */
function flipHeaderByte(dir: string): string {
  const f = join(dir, rankFileName("model", 0));
  const b = readFileSync(f);
  const at = b.indexOf(Buffer.from("veomni-ts-checkpoint")); // the header's __metadata__ format string
  expect(at).toBeGreaterThan(8);
  b[at] ^= 0x01;
  writeFileSync(f, b);
  return f;
}

describe("whole-file CRC", () => {
  test("a flipped byte in a shard header: resume refuses naming the file; the buffers are untouched", () => {
    const dir = copy();
    flipHeaderByte(dir);
    const targets: Piece[] = fsdpPieces(units, 2, 0, null);
    for (const t of targets) t.data.fill(42);
    expect(() => loadShard(dir, { expected: expectedShapes(units), targets })).toThrow(
      /checkpoint .*global_step_3: rank 0 file model_rank_00000\.safetensors is corrupted \(CRC-32 of the file [0-9a-f]+, metadata\.json says [0-9a-f]+\)/,
    );
    for (const t of targets) expect(t.data.every((x) => x === 42)).toBe(true);
  });

  test("merge refuses it too; --no-verify merges (piece CRCs still checked) and the weights are right", async () => {
    const dir = copy();
    flipHeaderByte(dir);
    expect(() => mergeToHf({ loadDir: dir, modelAssetsDir: null, saveDir: join(dir, "hf"), shardBytes: 5e9, dtype: "F32" })).toThrow(
      /rank 0 file model_rank_00000\.safetensors is corrupted \(CRC-32 of the file/,
    );
    expect(existsSync(join(dir, "hf"))).toBe(false);
    expect(readdirSync(dir).some((f) => f.includes(".tmp-"))).toBe(false);
    const cli = (args: string[]) => Bun.spawn([process.execPath, join(ROOT, "tools/merge.ts"), "--load-dir", dir, "--save-dir", join(dir, "hf"), "--dtype", "f32", ...args], { stdout: "pipe", stderr: "pipe" });
    const refused = cli([]);
    const [code, err] = await Promise.all([refused.exited, new Response(refused.stderr).text()]);
    expect(code).toBe(1);
    expect(err.trim().split("\n")).toHaveLength(1);
    expect(err).toContain("model_rank_00000.safetensors is corrupted");
    const fast = cli(["--no-verify"]);
    expect(await fast.exited).toBe(0);
    const { SafetensorsFolder } = await import("../../checkpoint/safetensors.ts");
    const hf = new SafetensorsFolder(join(dir, "hf"));
    for (const [name, want] of full) if (!name.startsWith("optim.")) expect(firstDiff(hf.readF32(name), want)).toBe(-1);
  });
});

describe("one definition of committed", () => {
  test("auto names each newer folder it skips and why; an explicit damaged one is one line naming it", () => {
    const out = join(tmp, "auto");
    copy(3, out);
    const broken = copy(5, out);
    writeFileSync(join(broken, METADATA_FILE), "{ torn");
    const interrupted = copy(7, out);
    writeFileSync(join(interrupted, METADATA_FILE + ".tmp-99"), readFileSync(join(interrupted, METADATA_FILE)));
    Bun.spawnSync(["rm", join(interrupted, METADATA_FILE)]);
    const warnings: string[] = [];
    expect(resolveLoadPath("auto", out, (m) => warnings.push(m))).toBe(join(out, "checkpoints", "global_step_3"));
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/^load_checkpoint_path auto: skipped .*global_step_5, newer than .*global_step_3: .*metadata\.json: not valid JSON/);
    expect(warnings[1]).toMatch(/skipped .*global_step_7, newer than .*global_step_3: no metadata\.json \(not a commit/);
    let msg = "";
    try { resolveLoadPath(broken, out); } catch (e) { msg = (e as Error).message; }
    expect(msg).toMatch(/^load_checkpoint_path .*global_step_5: .*metadata\.json: not valid JSON .*: not a committed checkpoint; refusing to load it$/);
    expect(msg.split("\n")).toHaveLength(1);
  });

  test("the rank writer refuses a committed folder and overwrites a damaged one (it is not a commit); metadata naming another step is not a commit", () => {
    const pieces = fsdpPieces(units, 1, 0, full);
    const layout = layoutRank(0, 3, pieces);
    const staging = new Float32Array(layout.stagingBytes / 4);
    stagePieces(layout, pieces, staging);
    const bytes = new Uint8Array(staging.buffer);
    const committed = copy();
    expect(() => writeRank(committed, layout, bytes, "{}")).toThrow(/is already committed; refusing to overwrite it/);
    const damaged = copy();
    writeFileSync(join(damaged, METADATA_FILE), "{ torn");
    expect(commitState(damaged).committed).toBe(false);
    const report = writeRank(damaged, layout, bytes, "{}");
    commitCheckpoint({ dir: damaged, step: 3, epoch: 0, worldSize: 1, mesh: {}, reports: [report] });
    expect(commitState(damaged).committed).toBe(true);
    const other = copy(3, join(tmp, `case${n++}`));
    const mp = join(other, METADATA_FILE);
    writeFileSync(mp, readFileSync(mp, "utf8").replace('"step": 3', '"step": 4'));
    expect(commitState(other)).toMatchObject({ committed: false, why: expect.stringContaining("says step 4, the folder is step 3") });
  });

  test("clashes: committed steps a run would save again, decided before it starts", () => {
    const out = join(tmp, "clash");
    for (const s of [2, 4, 6]) copy(s, out);
    const every2 = (s: number) => s % 2 === 0;
    expect(committedClashes(out, 2, 8, every2).map((c) => c.step)).toEqual([4, 6]); // resumed from the older global_step_2
    expect(committedClashes(out, 0, 8, every2).map((c) => c.step)).toEqual([2, 4, 6]); // a re-run from scratch
    expect(committedClashes(out, 6, 8, every2)).toEqual([]); // resumed from the newest
    expect(committedClashes(out, 2, 8, (s) => s === 8)).toEqual([]); // saves only at the end
  });
});

/** Root may mount a tmpfs (the real full disk); elsewhere those tests are skipped, /dev/full ones still run. */
const canMount = (() => {
  if (process.getuid?.() !== 0) return false;
  const probe = join(tmp, "mount-probe");
  mkdirSync(probe, { recursive: true });
  const ok = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe]).exitCode === 0;
  if (ok) Bun.spawnSync(["umount", probe]);
  return ok;
})();

/** A 64 KiB tmpfs filled to the last byte, unmounted after `fn`. */
function withFullTmpfs(fn: (dir: string) => void): void {
  const dir = join(tmp, `tmpfs${n++}`);
  mkdirSync(dir, { recursive: true });
  expect(Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]).exitCode).toBe(0);
  try {
    Bun.spawnSync(["dd", "if=/dev/zero", `of=${join(dir, "filler")}`, "bs=4k"]); // ends at ENOSPC
    fn(dir);
  } finally {
    Bun.spawnSync(["umount", dir]);
  }
}

describe("full disk", () => {
  // /dev/full answers every write with ENOSPC: the kernel's own full disk, for any user.
  test("a rank's write names the file it was writing", () => {
    const dir = join(tmp, "full", "global_step_1");
    mkdirSync(dir, { recursive: true });
    symlinkSync("/dev/full", join(dir, rankFileName("optim", 0)));
    const pieces = fsdpPieces(units, 1, 0, full);
    const layout = layoutRank(0, 1, pieces);
    const staging = new Float32Array(layout.stagingBytes / 4);
    stagePieces(layout, pieces, staging);
    expect(() => writeRank(dir, layout, new Uint8Array(staging.buffer), "{}")).toThrow(
      `rank 0 step 1: writing ${join(dir, rankFileName("optim", 0))}: ENOSPC: no space left on device`,
    );
  });

  test.skipIf(!canMount)("model_assets on a full tmpfs: the error names the file and no model_assets.tmp-PID is left", () => {
    withFullTmpfs((out) => {
      const model = join(tmp, "assets-model");
      mkdirSync(model, { recursive: true });
      writeFileSync(join(model, "config.json"), JSON.stringify({ model_type: "qwen2" }));
      let msg = "";
      try { writeModelAssets(out, { dirs: [model] }); } catch (e) { msg = (e as Error).message; }
      expect(msg).toStartWith(`model_assets: writing ${join(out, `model_assets.tmp-${process.pid}`, "config.json")}: ENOSPC: no space left on device`);
      expect(msg.split("\n")).toHaveLength(1);
      expect(readdirSync(out).filter((f) => f.startsWith("model_assets"))).toEqual([]);
    });
  });

  test("a commit record that cannot be written names it and leaves no metadata.json.tmp-PID", () => {
    const dir = join(tmp, "full-commit", "global_step_1");
    const pieces = fsdpPieces(units, 1, 0, full);
    const layout = layoutRank(0, 1, pieces);
    const staging = new Float32Array(layout.stagingBytes / 4);
    stagePieces(layout, pieces, staging);
    const report = writeRank(dir, layout, new Uint8Array(staging.buffer), "{}");
    const tmpFile = join(dir, `${METADATA_FILE}.tmp-${process.pid}`);
    symlinkSync("/dev/full", tmpFile);
    expect(() => commitCheckpoint({ dir, step: 1, epoch: 0, worldSize: 1, mesh: {}, reports: [report] })).toThrow(
      `commit step 1: writing ${tmpFile}: ENOSPC: no space left on device`,
    );
    expect(existsSync(tmpFile)).toBe(false);
    expect(existsSync(join(dir, METADATA_FILE))).toBe(false);
  });
});
