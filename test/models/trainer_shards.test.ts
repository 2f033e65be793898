// Trainer with OptimizerShards (how FSDP owns a slice of each unit): a rank owning the middle
// third of every unit's flat buffer updates exactly that third, identically to the full
// optimizer, with weight decay still applied per parameter where slices cut through parameters.
import { expect, test } from "bun:test";
import { createKernels } from "../../kernels/index.ts";
import { loadPretrained } from "../../models/index.ts";
import { Trainer, type TrainerOptions } from "../../actors/trainer.ts";
import { FIXTURES, readExpected, toMicroBatch } from "./fixtures.ts";

const k = await createKernels({ backend: "cpu", threads: 1 });
const dir = `${FIXTURES}qwen3-tiny`;
const mbs = readExpected("qwen3-tiny").micro_batches.map(toMicroBatch);
const opts: TrainerOptions = {
  schedule: { lr: 0.01, lr_min: 0, lr_start: 0, train_steps: 1, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
  weightDecay: 0.5, maxGradNorm: 0, // no clipping: a slice's norm is not the global norm here
};

test("a middle-third optimizer slice updates exactly its elements, as the full optimizer does", async () => {
  const full = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
  const part = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
  const before = await Promise.all(part.params.map((p) => k.read(p)));
  const range = (n: number) => [Math.floor(n / 3), Math.floor((2 * n) / 3)] as const;
  const tf = new Trainer(full, opts);
  const grads = part.allocGrads();
  const tp = new Trainer(part, {
    ...opts,
    shards: {
      slice: (u) => {
        const [a, b] = range(part.params[u].numel);
        return { start: a, param: k.view(part.params[u], a, [b - a]), grad: k.view(grads[u], a, [b - a]) };
      },
    },
  });
  // one step: afterwards the two models differ outside the slice, so later gradients would too
  await tf.step(0, mbs);
  await tp.step(0, mbs);
  for (let u = 0; u < full.params.length; u++) {
    const f = await k.read(full.params[u]);
    const p = await k.read(part.params[u]);
    const [a, b] = range(f.length);
    expect(Buffer.from(p.slice(a, b).buffer).equals(Buffer.from(f.slice(a, b).buffer))).toBe(true);
    expect(Buffer.from(p.slice(0, a).buffer).equals(Buffer.from(before[u].slice(0, a).buffer))).toBe(true);
    expect(Buffer.from(p.slice(b).buffer).equals(Buffer.from(before[u].slice(b).buffer))).toBe(true);
    expect(tp.m[u].numel).toBe(b - a);
  }
});
