// A process the kill tests SIGKILL at a chosen phase of a save. Deterministic: it parks at the
// phase (printing "PAUSED <phase>") and the test kills it there; no sleeps, no races.
//   bun kill_child.ts rank DIR STEP WORLD RANK PHASE   PHASE: none | staged | writing
//   bun kill_child.ts commit DIR STEP WORLD REPORTS... PHASE: none | before_rename | after_rename
// A rank that finishes prints "REPORT <json>"; a commit that finishes prints "COMMITTED".
import { commitCheckpoint } from "../../checkpoint/commit.ts";
import type { RankReport } from "../../checkpoint/rank_writer.ts";
import { AsyncSaver } from "../../checkpoint/saver.ts";
import { fillModel, fsdpPieces, smallModel } from "./helpers.ts";

const park = (phase: string) => {
  console.log(`PAUSED ${phase}`);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
};

const [mode, dir, stepS, worldS, ...rest] = process.argv.slice(2);
const step = Number(stepS), world = Number(worldS);
if (mode === "rank") {
  const rank = Number(rest[0]), phase = rest[1];
  const pieces = fsdpPieces(smallModel(), world, rank, fillModel(smallModel(), step));
  const saver = new AsyncSaver(rank);
  saver.onPaused = () => console.log(`PAUSED ${phase}`);
  // staged: the shard is in staging memory, nothing on disk yet; writing: mid-way through the first file.
  const pauseAfterBytes = phase === "staged" ? 0 : phase === "writing" ? 3000 : undefined;
  const ticket = await saver.save({ dir, step, pieces, extra: { step, rank }, pauseAfterBytes });
  console.log(`REPORT ${JSON.stringify(await ticket.durable)}`);
  await saver.close();
} else if (mode === "commit") {
  const phase = rest.at(-1)!;
  const reports = rest.slice(0, -1).map((r) => JSON.parse(r) as RankReport);
  commitCheckpoint({ dir, step, epoch: 0, worldSize: world, mesh: { dp_shard: world }, reports, beforeRename: phase === "before_rename" ? () => park(phase) : undefined });
  if (phase === "after_rename") park(phase);
  console.log("COMMITTED");
} else {
  throw new Error(`kill_child: unknown mode ${mode}`);
}
