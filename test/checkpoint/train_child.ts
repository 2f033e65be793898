// A training job in one process (W data-parallel ranks of the real Trainer, dp_local.ts) that
// checkpoints every SAVE steps asynchronously and resumes with load_checkpoint_path=auto.
//   bun train_child.ts OUT DATA WORLD STEPS SAVE [PARK_AT]
// PARK_AT: once earlier saves are committed, in optimizer step PARK_AT, after backward and before AdamW (mid-step), print
// "PARKED <step>" and wait to be killed. Prints "RESUMED <step>" or "FRESH", "LOSS <step> <hex>"
// per step, "DONE" after writing OUT/final.f32 (rank 0's parameters, every unit, in order).
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import {
  AsyncSaver, CommitTracker, checkpointDir, isSaveStep, loadAllExtra, loadShard, openCheckpoint, replicatedStatePieces,
  resolveLoadPath, stateShapes, statePieces,
} from "../../checkpoint/index.ts";
import type { LoaderState } from "../../data/index.ts";
import { buffers, makeRanks, midStep, run } from "./dp_local.ts";

const [out, data, worldS, stepsS, saveS, parkS] = process.argv.slice(2);
const world = Number(worldS), steps = Number(stepsS), save = Number(saveS), parkAt = parkS === undefined ? -1 : Number(parkS);
const ranks = makeRanks(world, steps, data);

let start = 0;
const at = resolveLoadPath("auto", out);
if (at) {
  const meta = openCheckpoint(at);
  const extras = loadAllExtra(at, meta) as { step: number; optimizerSteps: number; loader: LoaderState }[];
  for (const r of ranks) {
    loadShard(at, { expected: stateShapes(r.model.layout.units), targets: statePieces(buffers(r)) }, meta);
    r.trainer.optimizerSteps = extras[0].optimizerSteps;
    await r.loader.restore(extras.map((e) => e.loader));
  }
  start = extras[0].step;
  console.log(`RESUMED ${start}`);
} else console.log("FRESH");

midStep.hook = async (s) => {
  if (start + s === parkAt) {
    await Promise.all(commits); // the saves before PARK_AT are committed: the kill finds them on disk
    console.log(`PARKED ${parkAt}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  }
};
const savers = ranks.map((_, r) => new AsyncSaver(r));
const tracker = new CommitTracker({ outputDir: out, worldSize: world, mesh: { dp_replicate: world }, epoch: 0 });
const commits: Promise<void>[] = [];
await run(ranks, start, steps, async (done) => {
  if (!isSaveStep({ save_steps: save, save_epochs: 0 }, done)) return;
  tracker.begin(done);
  const tickets = await Promise.all(ranks.map((r, i) => savers[i].save({
    dir: checkpointDir(out, done), step: done, pieces: replicatedStatePieces(buffers(r), world, i),
    extra: { step: done, optimizerSteps: r.trainer.optimizerSteps, loader: r.loader.state() },
  })));
  // Training continues; each rank's durable report goes to the tracker when it lands.
  commits.push(...tickets.map((t) => t.durable.then((rep) => {
    const c = tracker.onReport(0, rep);
    if (c) console.log(`COMMIT ${c.kind} ${c.step}`);
  })));
}).then((losses) => losses.forEach((l, i) => console.log(`LOSS ${start + i} ${new Uint32Array(new Float32Array([l]).buffer)[0].toString(16)}`)));
await Promise.all(commits);
await Promise.all(savers.map((s) => s.close()));
const fd = openSync(join(out, "final.f32"), "w");
for (const p of ranks[0].model.params) writeSync(fd, new Uint8Array(p.host!.buffer, p.host!.byteOffset, p.host!.byteLength));
fsyncSync(fd);
closeSync(fd);
console.log("DONE");
