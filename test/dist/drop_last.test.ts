// data.drop_last false on 2 ranks = 1 rank: 96 samples in steps of 10 leave a last step of 6, which
// 2 ranks split 3 + 3 beside no-loss padding micro-batches. Every sample is trained once, and the
// global token normalisation keeps each step's loss and gradient those of the real samples.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import { readJobCopy } from "../../actors/job_copy.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { buildTraining } from "../../actors/build.ts";
import { paramStats } from "../../actors/train_runner.ts";
import { createDataLoader } from "../../data/index.ts";
import { close, TINY_V, tinyTrainConfig, writeTinyModelAndData } from "./actors_parity_setup.ts";

afterAll(() => expect(childPids()).toEqual([]));

test("drop_last false: the last, partial step is trained, 2 ranks = 1 rank", async () => {
  const dir = tempDir("droplast");
  const runs: Array<Array<Record<string, number | null>>> = [];
  for (const world of [1, 2]) {
    const out = join(dir, `out${world}`);
    const c = tinyTrainConfig(dir, out, { world_size: world }, { max_steps: null, global_batch_size: 10, save_hf_weights: false, save_epochs: 0 });
    c.data.drop_last = false;
    expect(await runJob(c, fileLogger(dir, `c${world}`).logger)).toBe(0);
    runs.push(readMetrics(out));
  }
  const [one, two] = runs;
  expect(one.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]); // ceil(96 / 10), not floor
  expect(two.map((m) => m.step)).toEqual(one.map((m) => m.step));
  // every sample's tokens exactly once: valid tokens sum to those of the 96 samples (length 5 + (s*5 % 11), minus 1 each)
  let expected = 0;
  for (let s = 0; s < 96; s++) expected += 4 + ((s * 5) % 11);
  expect(one.reduce((a, m) => a + (m.valid_tokens as number), 0)).toBe(expected);
  expect(two.reduce((a, m) => a + (m.valid_tokens as number), 0)).toBe(expected);
  close(one.map((m) => m.loss as number), two.map((m) => m.loss as number), 1e-5, "losses");
  close(one.map((m) => m.grad_norm as number), two.map((m) => m.grad_norm as number), 1e-4, "grad norms");
  close(one.at(-1)!.param_stats as unknown as number[], two.at(-1)!.param_stats as unknown as number[], 1e-4, "parameter stats after the last step");
}, 120_000);

// drop_last false with dynamic batching: 101 samples of uneven lengths on 1, 2 and 3 ranks. The
// ranks' shares pack into different numbers of micro-batches; every rank runs the planned steps,
// those that run out join with no-loss padding. Each distributed step must equal one process
// training on all ranks' micro-batches of that step at once (global token normalisation).
test("drop_last false with dyn_bsz: every sample once on 1, 2, 3 ranks; each step (the uneven last one too) equals one process", async () => {
  const dir = tempDir("droplastdyn");
  const { dataPath } = writeTinyModelAndData(join(dir, "d101"), 101);
  let expected = 0;
  for (let s = 0; s < 101; s++) expected += 4 + ((s * 5) % 11); // every sample's tokens but its first
  for (const world of [1, 2, 3]) {
    const out = join(dir, `out${world}`);
    const c = tinyTrainConfig(dir, out, { world_size: world }, {
      max_steps: null, dyn_bsz: true, micro_batch_size: 2, global_batch_size: 2 * world * 2, dyn_bsz_buffer_size: 4, save_hf_weights: false, save_epochs: 0,
    });
    c.data.train_path = dataPath;
    c.data.drop_last = false;
    expect(await runJob(c, fileLogger(dir, `c${world}`).logger)).toBe(0);
    const got = readMetrics(out);
    expect(got.reduce((a, m) => a + (m.valid_tokens as number), 0)).toBe(expected);
    // the same steps in one process: every rank's micro-batches of a step, in rank order
    const loaders = Array.from({ length: world }, (_, r) => createDataLoader(c, { dpRank: r, dpSize: world, vocabSize: TINY_V, tokenizerPath: null }));
    const one = await buildTraining({ ...c, launch: { ...c.launch, world_size: 1 } }, { rank: 0, world: 1, comm: null, logger: fileLogger(dir, `ref${world}`).logger, threads: 1 });
    try {
      const ref: Array<{ loss: number; grad_norm: number }> = [];
      for (let s = 0; ; s++) {
        const steps = await Promise.all(loaders.map((l) => l.nextStep()));
        if (steps.some((x) => x === null)) { expect(steps.every((x) => x === null)).toBe(true); break; }
        const mbs = steps.flatMap((x) => x!.microBatches);
        if (s === got.length - 1 && world > 1) expect(mbs.some((m) => m.padding)).toBe(true); // the last step is uneven here
        one.plan.beginStep(mbs.length);
        const m = await one.trainer.step(s, mbs);
        ref.push({ loss: m.loss, grad_norm: m.grad_norm });
      }
      expect(got.map((m) => m.step)).toEqual(ref.map((_, i) => i + 1));
      close(ref.map((m) => m.loss), got.map((m) => m.loss as number), 1e-5, `losses, ${world} ranks`);
      close(ref.map((m) => m.grad_norm), got.map((m) => m.grad_norm as number), 1e-4, `grad norms, ${world} ranks`);
      close(paramStats(one.plan, one.model.layout.units.length), got.at(-1)!.param_stats as unknown as number[], 1e-4, `parameters after the last step, ${world} ranks`);
    } finally {
      await one.loader.close();
    }
  }
}, 240_000);

// drop_last true with dyn_bsz and no max_steps plans VeOmni's estimate from data.train_size
// (tokens): when the data ends first, the error says which fields to set.
test("dyn_bsz without max_steps: data that ends before the train_size estimate names the fields to set", async () => {
  const dir = tempDir("droplastest");
  const out = join(dir, "out");
  const c = tinyTrainConfig(dir, out, { world_size: 1 }, { max_steps: null, dyn_bsz: true, micro_batch_size: 2, global_batch_size: 2, save_hf_weights: false, save_epochs: 0 });
  expect(await runJob(c, fileLogger(dir, "c").logger)).toBe(1);
  const err = readJobCopy(out)!.error!;
  expect(err).toContain("rank 0: data exhausted at step ");
  expect(err).toContain("of 312500: with train.dyn_bsz the 312500 steps are VeOmni's estimate from data.train_size 10000000 tokens; set data.train_size to the data's token count, set train.max_steps (the data repeats), or set data.drop_last false");
}, 120_000);
