// The coordinator's commit bookkeeping over real saves: reports arrive late and interleaved,
// a stale epoch is refused, a failed rank is named and the previous commit stays the newest.
import { expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { AsyncSaver, CommitTracker, type RankReport, checkpointDir, epochEndingAt, isSaveStep, isSaveStepOf, loadExtra, loadShard, openCheckpoint, removeStaleEpochFiles, resolveLoadPath } from "../../checkpoint/index.ts";
import { assemble, expectedShapes, fillModel, firstDiff, fsdpPieces, smallModel } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const tmp = tempDir("tracker");
const units = smallModel();

async function rankReports(out: string, step: number, world: number): Promise<RankReport[]> {
  const savers = [...Array(world).keys()].map((r) => new AsyncSaver(r));
  const full = fillModel(units, step);
  const tickets = await Promise.all(savers.map((s, r) => s.save({ dir: checkpointDir(out, step), step, pieces: fsdpPieces(units, world, r, full), extra: { step } })));
  const reports = await Promise.all(tickets.map((t) => t.durable));
  await Promise.all(savers.map((s) => s.close()));
  return reports;
}

test("commits when the last rank reports; failures name the rank; stale epochs refused", async () => {
  const out = join(tmp, "job");
  const t = new CommitTracker({ outputDir: out, worldSize: 2, mesh: { dp_shard: 2 }, epoch: 3 });
  t.begin(2);
  t.begin(4);
  expect(t.inFlight).toEqual([2, 4]);
  const [a0, a1] = await rankReports(out, 2, 2);
  const [b0, b1] = await rankReports(out, 4, 2);
  expect(t.onReport(3, b1)).toBeNull(); // step 4's rank 1 first: out of order is fine
  expect(t.onReport(3, a0)).toBeNull();
  expect(() => t.onReport(2, a1)).toThrow(/refused a report from rank 1 of stale epoch 2 \(current 3\)/);
  const c2 = t.onReport(3, a1)!;
  expect(c2.kind).toBe("committed");
  expect(c2.kind === "committed" && c2.relDir).toBe(join("checkpoints", "global_step_2"));
  expect(resolveLoadPath("auto", out)).toBe(checkpointDir(out, 2));
  // Step 4: rank 0 fails (e.g. disk full); the late success of rank 1 changes nothing.
  const f = t.onFailure(3, 0, 4, "ENOSPC: no space left on device");
  expect(f).toEqual({ kind: "failed", step: 4, rank: 0, reason: "checkpoint step 4 not committed: rank 0 failed to save: ENOSPC: no space left on device" });
  expect(t.onReport(3, b0)).toBeNull();
  expect(existsSync(join(checkpointDir(out, 4), "metadata.json"))).toBe(false);
  expect(resolveLoadPath("auto", out)).toBe(checkpointDir(out, 2));
  expect(t.lastCommitted).toBe(2);
  expect(() => t.onReport(3, { ...a0, step: 6 })).toThrow(/no save of that step was commanded/);
});

test("save schedule: save_steps and save_epochs", () => {
  const o = { save_steps: 3, save_epochs: 2 };
  expect([1, 2, 3, 4, 5, 6].filter((s) => isSaveStep(o, s))).toEqual([3, 6]);
  expect(isSaveStep(o, 7, true, 2)).toBe(true);
  expect(isSaveStep(o, 7, true, 1)).toBe(false);
  expect(isSaveStep({ save_steps: 0, save_epochs: 0 }, 10, true, 1)).toBe(false);
});

test("save schedule of a multi-rank job: num_train_epochs even spans of the total, the last ending at the last step", () => {
  const ends = (total: number, t: { num_train_epochs: number; max_steps?: number }) =>
    [...Array(total).keys()].map((s) => epochEndingAt(s + 1, total, t)).flatMap((e, s) => (e ? [[s + 1, e]] : []));
  expect(ends(30, { num_train_epochs: 3 })).toEqual([[10, 1], [20, 2], [30, 3]]);
  expect(ends(31, { num_train_epochs: 3 })).toEqual([[11, 1], [21, 2], [31, 3]]);
  expect(ends(2, { num_train_epochs: 3 })).toEqual([[1, 1], [2, 3]]); // fewer steps than epochs: step 2 ends 2 and 3
  expect(ends(30, { num_train_epochs: 3, max_steps: 30 })).toEqual([]); // max_steps: no epochs
  const at = (o: { save_steps: number; save_epochs: number }, total: number) =>
    [...Array(total).keys()].map((s) => s + 1).filter((s) => isSaveStepOf({ ...o, num_train_epochs: 4 }, s, total));
  expect(at({ save_steps: 0, save_epochs: 2 }, 40)).toEqual([20, 40]);
  expect(at({ save_steps: 0, save_epochs: 1 }, 40)).toEqual([10, 20, 30, 40]);
  expect(at({ save_steps: 15, save_epochs: 0 }, 40)).toEqual([15, 30]);
  expect(at({ save_steps: 0, save_epochs: 0 }, 40)).toEqual([]);
  expect(at({ save_steps: 0, save_epochs: 2 }, 3)).toEqual([2, 3]); // epoch 2 ends at step 2, epochs 3 and 4 at step 3
});

test("a stale writer of an older epoch saving the same step cannot clobber the new epoch's files", async () => {
  const out = join(tmp, "fenced");
  const dir = checkpointDir(out, 4);
  const save = async (epoch: number, seed: number) => {
    const full = fillModel(units, seed);
    const savers = [0, 1].map((r) => new AsyncSaver(r));
    const tickets = await Promise.all(savers.map((s, r) => s.save({ dir, step: 4, epoch, pieces: fsdpPieces(units, 2, r, full), extra: { epoch } })));
    const reports = await Promise.all(tickets.map((t) => t.durable));
    await Promise.all(savers.map((s) => s.close()));
    return reports;
  };
  const t = new CommitTracker({ outputDir: out, worldSize: 2, mesh: { dp_shard: 2 }, epoch: 2 });
  t.begin(4);
  const fresh = await save(2, 22); // the new epoch's ranks
  await save(1, 11); // the old epoch's writer lands late, same step, same folder
  expect(readdirSync(dir).filter((n) => n.startsWith("model_")).sort()).toEqual(["model_e1_rank_00000.safetensors", "model_e1_rank_00001.safetensors", "model_e2_rank_00000.safetensors", "model_e2_rank_00001.safetensors"]);
  expect(t.onReport(2, fresh[0])).toBeNull();
  const c = t.onReport(2, fresh[1])!;
  expect(c.kind).toBe("committed");
  // the commit of epoch 2 removes what epoch 1 left uncommitted in its folder: only epoch-2 names remain
  const e1 = ["extra_state_e1_rank_00000.json", "extra_state_e1_rank_00001.json", "model_e1_rank_00000.safetensors", "model_e1_rank_00001.safetensors", "optim_e1_rank_00000.safetensors", "optim_e1_rank_00001.safetensors"];
  expect(c.kind === "committed" && c.removed).toEqual(e1);
  expect(readdirSync(dir).filter((n) => n !== "metadata.json").sort()).toEqual(e1.map((n) => n.replace("_e1_", "_e2_")));
  const targets = [0, 1, 2].map((r) => fsdpPieces(units, 3, r, null));
  for (const tg of targets) loadShard(dir, { expected: expectedShapes(units), targets: tg });
  const got = assemble(targets);
  for (const [name, a] of fillModel(units, 22)) expect({ name, diff: firstDiff(got.get(name)!, a) }).toEqual({ name, diff: -1 });
  expect(loadExtra(dir, openCheckpoint(dir), 1)).toEqual({ epoch: 2 });
});

test("the commit keeps every file it lists whatever epoch its name carries, and a newer epoch's files", async () => {
  // a save begun under epoch 1 and committed under epoch 2 (a coordinator adopted its ranks meanwhile)
  const out = join(tmp, "adopted");
  const dir = checkpointDir(out, 6);
  const full = fillModel(units, 6);
  const write = async (epoch: number, ranks: number[]) => {
    const savers = ranks.map((r) => new AsyncSaver(r));
    const tickets = await Promise.all(savers.map((s, i) => s.save({ dir, step: 6, epoch, pieces: fsdpPieces(units, 2, ranks[i], full), extra: { epoch } })));
    const reports = await Promise.all(tickets.map((t) => t.durable));
    await Promise.all(savers.map((s) => s.close()));
    return reports;
  };
  const listed = await write(1, [0, 1]);
  await write(3, [0]); // a newer epoch's writer (this coordinator is the stale one): not its to remove
  const t = new CommitTracker({ outputDir: out, worldSize: 2, mesh: { dp_shard: 2 }, epoch: 2 });
  t.begin(6);
  t.onReport(2, listed[0]);
  const c = t.onReport(2, listed[1])!;
  expect(c.kind === "committed" && c.meta.epoch).toBe(2);
  expect(c.kind === "committed" && c.removed).toEqual([]);
  expect(readdirSync(dir).filter((n) => n.startsWith("model_")).sort()).toEqual(["model_e1_rank_00000.safetensors", "model_e1_rank_00001.safetensors", "model_e3_rank_00000.safetensors"]);
  const targets = [0, 1].map((r) => fsdpPieces(units, 2, r, null));
  for (const tg of targets) loadShard(dir, { expected: expectedShapes(units), targets: tg });
  const got = assemble(targets);
  for (const [name, a] of full) expect({ name, diff: firstDiff(got.get(name)!, a) }).toEqual({ name, diff: -1 });
});

test("a zombie coordinator (declared dead, then woken) commits nothing: a newer job epoch refuses it, a commit is never overwritten", async () => {
  const out = join(tmp, "zombie");
  const dir = checkpointDir(out, 4);
  const save = async (epoch: number, seed: number) => {
    const savers = [0, 1].map((r) => new AsyncSaver(r));
    const full = fillModel(units, seed);
    const tickets = await Promise.all(savers.map((s, r) => s.save({ dir, step: 4, epoch, pieces: fsdpPieces(units, 2, r, full), extra: { epoch } })));
    const reports = await Promise.all(tickets.map((t) => t.durable));
    await Promise.all(savers.map((s) => s.close()));
    return reports;
  };
  let jobEpoch = 1; // what the job record says (the coordinator reads job.json)
  const zombie = new CommitTracker({ outputDir: out, worldSize: 2, mesh: { dp_shard: 2 }, epoch: 1, currentEpoch: () => jobEpoch });
  zombie.begin(4);
  const old = await save(1, 11);
  expect(zombie.onReport(1, old[0])).toBeNull();
  // frozen here; another coordinator takes the job over under epoch 2 and its ranks save step 4
  jobEpoch = 2;
  const fresh = await save(2, 22);
  // woken before the new coordinator commits: refused by the epoch, nothing written
  const refused = zombie.onReport(1, old[1])!;
  expect(refused).toEqual({
    kind: "failed", step: 4, rank: -1,
    reason: "commit step 4: refused: this coordinator's epoch 1 is older than the job's current epoch 2: another coordinator took the job over; this one stops",
  });
  expect(readdirSync(dir).filter((n) => n.startsWith("metadata"))).toEqual([]); // no commit, no temp file
  // the new coordinator commits (its epoch is the job's); epoch 1's files go
  const owner = new CommitTracker({ outputDir: out, worldSize: 2, mesh: { dp_shard: 2 }, epoch: 2, currentEpoch: () => jobEpoch });
  owner.begin(4);
  owner.onReport(2, fresh[0]);
  const c = owner.onReport(2, fresh[1])!;
  expect(c.kind === "committed" && c.removed.length).toBe(6);
  const committed = readFileSync(join(dir, "metadata.json"));
  // a zombie that cannot see the job's epoch (no job.json) still never replaces the commit
  const blind = new CommitTracker({ outputDir: out, worldSize: 2, mesh: { dp_shard: 2 }, epoch: 2 });
  blind.begin(4);
  blind.onReport(2, fresh[0]);
  expect(blind.onReport(2, fresh[1])).toEqual({
    kind: "failed", step: 4, rank: -1, reason: `commit step 4: ${join(dir, "metadata.json")} already exists (committed by epoch 2); a commit is never overwritten`,
  });
  expect(readFileSync(join(dir, "metadata.json")).equals(committed)).toBe(true);
  expect(readdirSync(dir).filter((n) => n.startsWith("metadata"))).toEqual(["metadata.json"]);
  // removing an older epoch's leftovers never touches what the commit on disk lists, whatever
  // metadata the caller holds (here a later epoch's that lists none of them)
  const listed = Object.keys(c.kind === "committed" ? c.meta.files : {}).sort();
  expect(removeStaleEpochFiles(dir, { ...(c.kind === "committed" ? c.meta : ({} as never)), epoch: 5, files: {} })).toEqual([]);
  expect(readdirSync(dir).filter((n) => n !== "metadata.json").sort()).toEqual(listed);
  const targets = [0, 1].map((r) => fsdpPieces(units, 2, r, null));
  for (const tg of targets) loadShard(dir, { expected: expectedShapes(units), targets: tg });
  const got = assemble(targets);
  for (const [name, a] of fillModel(units, 22)) expect({ name, diff: firstDiff(got.get(name)!, a) }).toEqual({ name, diff: -1 });
});
