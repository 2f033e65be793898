// data.drop_last false on 2 ranks = 1 rank: 96 samples in steps of 10 leave a last step of 6, which
// 2 ranks split 3 + 3 beside no-loss padding micro-batches. Every sample is trained once, and the
// global token normalisation keeps each step's loss and gradient those of the real samples.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import { childPids, fileLogger, readMetrics, tempDir } from "./actors_harness.ts";
import { close, tinyTrainConfig } from "./actors_parity_setup.ts";

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
