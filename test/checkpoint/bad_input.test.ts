// Damaged or foreign checkpoints are refused with an error naming the problem, before any
// target buffer is modified.
import { beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import { cpSync, readFileSync, renameSync, rmSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { commitCheckpoint, resolveLoadPath } from "../../checkpoint/commit.ts";
import { METADATA_FILE, rankFileName } from "../../checkpoint/format.ts";
import { loadShard } from "../../checkpoint/load.ts";
import type { Piece } from "../../checkpoint/plan.ts";
import { AsyncSaver } from "../../checkpoint/saver.ts";
import { firstNonFinite } from "../../checkpoint/rank_writer.ts";
import { expectedShapes, fillModel, fsdpPieces, saveAll, smallModel } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const units = smallModel();
const full = fillModel(units, 11);
const tmp = tempDir("bad");
const good = join(tmp, "good", "global_step_3");
beforeAll(async () => { await saveAll(good, 3, [0, 1].map((r) => fsdpPieces(units, 2, r, full))); });

let n = 0;
/** A fresh copy of the good checkpoint to damage. */
function copy(): string {
  const dir = join(tmp, `case${n++}`, "global_step_3");
  cpSync(good, dir, { recursive: true });
  return dir;
}

/** Loading into sentinel-filled targets must throw `pattern` and leave every target as it was. */
function expectRefused(dir: string, pattern: RegExp, expected = expectedShapes(units)) {
  const targets: Piece[] = fsdpPieces(units, 3, 1, null);
  for (const t of targets) t.data.fill(42);
  expect(() => loadShard(dir, { expected, targets })).toThrow(pattern);
  for (const t of targets) expect(t.data.every((x) => x === 42)).toBe(true);
}

describe("refused checkpoints", () => {
  test("truncated shard", () => {
    const dir = copy();
    const f = join(dir, rankFileName("optim", 1));
    truncateSync(f, readFileSync(f).length - 100);
    expectRefused(dir, /rank 1 file optim_rank_00001\.safetensors is \d+ bytes, metadata says \d+ \(truncated/);
  });

  test("corrupted shard (one flipped bit)", () => {
    const dir = copy();
    const f = join(dir, rankFileName("model", 0));
    const b = readFileSync(f);
    b[b.length - 5] ^= 0x10;
    writeFileSync(f, b);
    expectRefused(dir, /rank 0 file model_rank_00000\.safetensors is corrupted \(CRC-32 of the file/);
    // the piece's own CRC catches it too when the whole-file check is skipped
    const targets: Piece[] = fsdpPieces(units, 3, 1, null);
    expect(() => loadShard(dir, { expected: expectedShapes(units), targets, verify: false })).toThrow(/rank 0 file model_rank_00000\.safetensors: .* is corrupted \(CRC-32/);
  });

  test("missing rank file", () => {
    const dir = copy();
    unlinkSync(join(dir, rankFileName("model", 1)));
    expectRefused(dir, /rank 1 file model_rank_00001\.safetensors is missing/);
  });

  test("another model shape: every mismatch listed", () => {
    const dir = copy();
    const other = expectedShapes(smallModel(3, 37, 12, 24)); // one more layer, wider MLP
    let msg = "";
    try { loadShard(dir, { expected: other, targets: [] }); } catch (e) { msg = (e as Error).message; }
    expect(msg).toContain("does not fit this model");
    expect(msg).toContain("model.layers.0.mlp.gate_proj.weight: expected [24, 12], checkpoint has [20, 12]");
    expect(msg).toContain("model.layers.2.input_layernorm.weight: expected [12], absent from the checkpoint");
    expect(msg).toContain("optim.exp_avg_sq.model.layers.1.mlp.down_proj.weight: expected [12, 24], checkpoint has [12, 20]");
    expect(msg.split("\n").length).toBe(1 + 2 * 3 * 2 + 5 * 3); // 2 resized mats x 3 groups x 2 layers + 5 new tensors x 3 groups
    expectRefused(dir, /does not fit this model/, other);
  });

  test("unknown format version", () => {
    const dir = copy();
    const mp = join(dir, METADATA_FILE);
    writeFileSync(mp, readFileSync(mp, "utf8").replace('"version": 1', '"version": 99'));
    expectRefused(dir, /unknown checkpoint format version 99, this build reads version 1/);
  });

  test("folder without metadata is not a checkpoint; auto skips it", () => {
    const dir = copy();
    renameSync(join(dir, METADATA_FILE), join(dir, "metadata.json.tmp-1"));
    expectRefused(dir, /no metadata\.json: not a committed checkpoint/);
    expect(() => resolveLoadPath(dir, tmp)).toThrow(/not a committed checkpoint/);
    expect(resolveLoadPath("auto", join(dir, "..", ".."))).toBeNull();
    rmSync(join(dir, ".."), { recursive: true });
  });

  test("firstNonFinite finds NaN, +Inf, -Inf anywhere (also in the tail past a multiple of 4)", () => {
    for (const n of [1, 7, 64]) for (const at of [0, n - 1, n >> 1]) for (const bad of [NaN, Infinity, -Infinity]) {
      const v = new Float32Array(n).fill(-3.4e38);
      expect(firstNonFinite(v)).toBe(-1);
      v[at] = bad;
      expect(firstNonFinite(v)).toBe(at);
    }
  });

  test("non-finite parameters are never written or committed", async () => {
    const dir = join(tmp, "nan", "global_step_4");
    const ranks = [0, 1].map((r) => fsdpPieces(units, 2, r, full));
    ranks[1][3].data[2] = NaN;
    const savers = [new AsyncSaver(0), new AsyncSaver(1)];
    const tickets = await Promise.all(ranks.map((pieces, r) => savers[r].save({ dir, step: 4, pieces, extra: {} })));
    const rank0 = await tickets[0].durable;
    await expect(tickets[1].durable).rejects.toThrow(/rank 1: checkpoint save failed: rank 1 step 4: non-finite values, checkpoint not written: .*=NaN/);
    expect(() => commitCheckpoint({ dir, step: 4, epoch: 0, worldSize: 2, mesh: {}, reports: [rank0] })).toThrow(/no report from rank\(s\) 1 of 2/);
    expect(resolveLoadPath("auto", join(tmp, "nan"))).toBeNull();
    await Promise.all(savers.map((s) => s.close()));
  });
});
