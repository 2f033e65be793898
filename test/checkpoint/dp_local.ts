// W data-parallel ranks in one process with the real model, Trainer and data loader: gradients
// and scalars are summed in rank order once every rank arrived (deterministic), as a DDP
// all-reduce would. Used by the exact-resume tests and the restart child process.
import { expect } from "bun:test";
import { Trainer } from "../../actors/trainer.ts";
import type { StepCollectives } from "../../parallel/index.ts";
import type { UnitBuffers } from "../../checkpoint/index.ts";
import { createDataLoader, type DataLoader } from "../../data/index.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { createModel, initWeights, type DecoderLM } from "../../models/index.ts";

export const V = 96;
const k = createCpuKernels({ threads: 1 });
export const raw = { model_type: "qwen2", vocab_size: V, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: true };

/** Pre-tokenized data: 80 samples of varied lengths and ids. */
export async function writeData(file: string): Promise<void> {
  await Bun.write(file, Array.from({ length: 80 }, (_, s) => JSON.stringify({ input_ids: Array.from({ length: 3 + ((s * 5) % 13) }, (_, i) => (s * 31 + i * 7) % V) })).join("\n") + "\n");
}

/** Hook for the restart test: awaited by rank 0 in syncGrads (mid-step: after backward, before AdamW). */
export const midStep = { hook: async (_step: number): Promise<void> => {} };

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
  let steps = 0;
  return (rank) => ({
    allReduceSum: (x) => barrier(rank, x, sum),
    syncGrads: async () => {
      if (rank === 0) await midStep.hook(steps++);
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

export interface Rank { model: DecoderLM; trainer: Trainer; loader: DataLoader }

export function makeRanks(world: number, steps: number, dataFile: string, initSeed = 5, firstStep = 0): Rank[] {
  const models = Array.from({ length: world }, () => {
    const m = createModel(k, raw, "dp_local", { maxTokens: 64, gradientCheckpointing: false });
    initWeights(m, initSeed);
    return m;
  });
  const group = localGroup(world, models);
  return models.map((model, r) => ({
    model,
    trainer: new Trainer(model, {
      schedule: { lr: 1e-2, lr_min: 1e-4, lr_start: 0, train_steps: steps, lr_warmup_ratio: 0.3, lr_decay_style: "cosine", lr_decay_ratio: 1 },
      weightDecay: 0.1, maxGradNorm: 1.0, collectives: group(r),
    }),
    loader: createDataLoader({
      data: { train_path: dataFile, data_type: "plaintext", max_seq_len: 16, on_bad_sample: "error" },
      train: { micro_batch_size: 2, global_batch_size: 4 * world, num_train_epochs: 3, dyn_bsz: true, dyn_bsz_buffer_size: 6, seed: 9, max_steps: steps },
    }, { dpRank: r, dpSize: world, vocabSize: V, tokenizerPath: null }),
  }));
}

export function buffers(r: Rank): UnitBuffers[] {
  return r.model.layout.units.map((u) => ({ params: u.params, start: 0, model: r.model.params[u.index].host!, expAvg: r.trainer.m[u.index].host!, expAvgSq: r.trainer.v[u.index].host! }));
}

/** Runs steps [from, to) on all ranks; returns each step's global loss (identical on all ranks). */
export async function run(ranks: Rank[], from: number, to: number, onStep?: (step: number) => void | Promise<void>): Promise<number[]> {
  const losses: number[] = [];
  for (let s = from; s < to; s++) {
    const ms = await Promise.all(ranks.map(async (r) => r.trainer.step(s, (await r.loader.nextStep())!.microBatches)));
    expect(new Set(ms.map((m) => m.loss)).size).toBe(1);
    expect(ms[0].valid_tokens).toBe(ms.reduce((a, m) => a + m.local.validTokens, 0)); // a real all-reduce
    expect(ms[0].loss).toBeGreaterThan(1);
    losses.push(ms[0].loss);
    await onStep?.(s + 1);
  }
  return losses;
}
