// Exact resume on the CPU backend: the real model, Trainer (AdamW, clipping, LR schedule) and
// data loader on W data-parallel ranks (in one process, gradients summed in rank order), saved
// after K steps through the async saver + commit, then a fresh set of ranks resumed with `auto`:
// every later step's loss and the final parameters are bitwise equal to the uninterrupted run.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import {
  AsyncSaver, checkpointDir, commitCheckpoint, loadAllExtra, loadShard, openCheckpoint,
  replicatedStatePieces, resolveLoadPath, stateShapes, statePieces,
} from "../../checkpoint/index.ts";
import type { LoaderState } from "../../data/index.ts";
import { initWeights } from "../../models/index.ts";
import { buffers, makeRanks, run, writeData } from "./dp_local.ts";
import { firstDiff } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const tmp = tempDir("resume");
const STEPS = 6, SAVE_AT = 3;
const dataFile = join(tmp, "data.jsonl");
await writeData(dataFile);

describe("exact resume", () => {
  for (const world of [2, 4]) {
    test(`${world} ranks: losses after resume bitwise equal the uninterrupted run`, async () => {
      const full = makeRanks(world, STEPS, dataFile);
      const fullLosses = await run(full, 0, STEPS);

      const out = join(tmp, `w${world}`);
      const first = makeRanks(world, STEPS, dataFile);
      expect(await run(first, 0, SAVE_AT)).toEqual(fullLosses.slice(0, SAVE_AT));
      const dir = checkpointDir(out, SAVE_AT);
      const savers = first.map((_, r) => new AsyncSaver(r));
      const tickets = await Promise.all(first.map((r, i) => savers[i].save({
        dir, step: SAVE_AT, pieces: replicatedStatePieces(buffers(r), world, i),
        extra: { step: SAVE_AT, optimizerSteps: r.trainer.optimizerSteps, loader: r.loader.state() },
      })));
      await run(first, SAVE_AT, SAVE_AT + 1); // training goes on while the writers write
      commitCheckpoint({ dir, step: SAVE_AT, epoch: 0, worldSize: world, mesh: { dp_replicate: world }, reports: await Promise.all(tickets.map((t) => t.durable)) });
      await Promise.all(savers.map((s) => s.close()));

      // A fresh job: new models (other init seed), trainers and loaders, resumed with `auto`.
      const resumed = makeRanks(world, STEPS, dataFile);
      for (const r of resumed) initWeights(r.model, 99);
      const at = resolveLoadPath("auto", out)!;
      expect(at).toBe(dir);
      const meta = openCheckpoint(at);
      const extras = loadAllExtra(at, meta) as { step: number; optimizerSteps: number; loader: LoaderState }[];
      for (const r of resumed) {
        loadShard(at, { expected: stateShapes(r.model.layout.units), targets: statePieces(buffers(r)) }, meta);
        r.trainer.optimizerSteps = extras[0].optimizerSteps;
        await r.loader.restore(extras.map((e) => e.loader));
      }
      expect(extras[0].step).toBe(SAVE_AT);
      const after = await run(resumed, SAVE_AT, STEPS);
      expect(after).toEqual(fullLosses.slice(SAVE_AT));
      for (const [i, a] of after.entries()) expect(Object.is(a, fullLosses[SAVE_AT + i])).toBe(true);
      for (const u of full[0].model.layout.units) {
        expect({ unit: u.name, diff: firstDiff(resumed[world - 1].model.params[u.index].host!, full[0].model.params[u.index].host!) }).toEqual({ unit: u.name, diff: -1 });
      }
    });
  }
});
