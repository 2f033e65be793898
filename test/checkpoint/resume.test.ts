// Exact resume on the CPU backend: the real model, Trainer (AdamW, clipping, LR schedule) and
// data loader on W data-parallel ranks (in one process, gradients summed in rank order), saved
// after K steps through the async saver + commit, then a fresh set of ranks resumed with `auto`:
// every later step's loss and the final parameters are bitwise equal to the uninterrupted run.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Trainer, type StepCollectives } from "../../actors/trainer.ts";
import {
  AsyncSaver, type UnitBuffers, checkpointDir, commitCheckpoint, loadAllExtra, loadShard, openCheckpoint,
  replicatedStatePieces, resolveLoadPath, stateShapes, statePieces,
} from "../../checkpoint/index.ts";
import { createDataLoader, type DataLoader, type LoaderState } from "../../data/index.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { createModel, initWeights, type DecoderLM } from "../../models/index.ts";
import { firstDiff, tempDir } from "./helpers.ts";

const tmp = tempDir("resume");
afterAll(tmp.cleanup);
const STEPS = 6, SAVE_AT = 3, V = 96;
const k = createCpuKernels({ threads: 1 });
const raw = { model_type: "qwen2", vocab_size: V, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: true };

// Pre-tokenized data: 80 samples of varied lengths and ids.
const dataFile = join(tmp.dir, "data.jsonl");
await Bun.write(dataFile, Array.from({ length: 80 }, (_, s) => JSON.stringify({ input_ids: Array.from({ length: 3 + ((s * 5) % 13) }, (_, i) => (s * 31 + i * 7) % V) })).join("\n") + "\n");

/** W ranks in one process: sums are taken in rank order once all ranks arrived (deterministic). */
function localGroup(world: number, models: DecoderLM[]): (rank: number) => StepCollectives {
  let arrived: { vals: number[]; wake: ((v: number) => void)[] } = { vals: [], wake: [] };
  const barrier = (rank: number, x: number, onAll: (vals: number[]) => number) => new Promise<number>((wake) => {
    arrived.vals[rank] = x;
    arrived.wake[rank] = wake;
    if (arrived.wake.filter(Boolean).length < world) return;
    const cur = arrived;
    arrived = { vals: [], wake: [] };
    const v = onAll(cur.vals);
    cur.wake.forEach((w) => w(v));
  });
  const sum = (vals: number[]) => vals.reduce((a, b) => a + b, 0);
  return (rank) => ({
    allReduceSum: (x) => barrier(rank, x, sum),
    syncGrads: async () => {
      await barrier(rank, 0, () => {
        for (let u = 0; u < models[0].params.length; u++) {
          const gs = models.map((m) => m.grads![u].host!);
          const total = new Float32Array(gs[0].length);
          for (const g of gs) for (let i = 0; i < g.length; i++) total[i] += g[i];
          for (const g of gs) g.set(total);
        }
        return 0;
      });
    },
  });
}

interface Rank { model: DecoderLM; trainer: Trainer; loader: DataLoader }
function makeRanks(world: number): Rank[] {
  const models = Array.from({ length: world }, () => {
    const m = createModel(k, raw, "resume test", { maxTokens: 64, gradientCheckpointing: false });
    initWeights(m, 5);
    return m;
  });
  const group = localGroup(world, models);
  return models.map((model, r) => ({
    model,
    trainer: new Trainer(model, {
      schedule: { lr: 1e-2, lr_min: 1e-4, lr_start: 0, train_steps: STEPS, lr_warmup_ratio: 0.3, lr_decay_style: "cosine", lr_decay_ratio: 1 },
      weightDecay: 0.1, maxGradNorm: 1.0, collectives: group(r),
    }),
    loader: createDataLoader({
      data: { train_path: dataFile, data_type: "plaintext", max_seq_len: 16, on_bad_sample: "error" },
      train: { micro_batch_size: 2, global_batch_size: 4 * world, num_train_epochs: 3, dyn_bsz: true, dyn_bsz_buffer_size: 6, seed: 9, max_steps: STEPS },
    }, { dpRank: r, dpSize: world, vocabSize: V, tokenizerPath: null }),
  }));
}

function buffers(r: Rank): UnitBuffers[] {
  return r.model.layout.units.map((u) => ({ params: u.params, start: 0, model: r.model.params[u.index].host!, expAvg: r.trainer.m[u.index].host!, expAvgSq: r.trainer.v[u.index].host! }));
}

/** Runs steps [from, to) on all ranks; returns the global loss of each step (identical on all ranks). */
async function run(ranks: Rank[], from: number, to: number): Promise<number[]> {
  const losses: number[] = [];
  for (let s = from; s < to; s++) {
    const ms = await Promise.all(ranks.map(async (r) => r.trainer.step(s, (await r.loader.nextStep())!.microBatches)));
    expect(new Set(ms.map((m) => m.loss)).size).toBe(1);
    expect(ms[0].valid_tokens).toBe(ms.reduce((a, m) => a + m.local.validTokens, 0)); // a real all-reduce
    expect(ms[0].loss).toBeGreaterThan(1);
    losses.push(ms[0].loss);
  }
  return losses;
}

describe("exact resume", () => {
  for (const world of [2, 4]) {
    test(`${world} ranks: losses after resume bitwise equal the uninterrupted run`, async () => {
      const full = makeRanks(world);
      const fullLosses = await run(full, 0, STEPS);

      const out = join(tmp.dir, `w${world}`);
      const first = makeRanks(world);
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
      const resumed = makeRanks(world);
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
