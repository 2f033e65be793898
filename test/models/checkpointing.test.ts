// Activation checkpointing (train.enable_gradient_checkpointing): each decoder layer keeps only
// its input and recomputes its forward in backward. Gradients must be bit-identical, the saved
// activation footprint smaller, and the unit hooks must fire in FSDP order either way.
import { expect, test } from "bun:test";
import { createKernels } from "../../kernels/index.ts";
import { loadPretrained, type DecoderLM } from "../../models/index.ts";
import { FIXTURES, readExpected, toMicroBatch } from "./fixtures.ts";

const k = await createKernels({ backend: "cpu", threads: 1 });
const name = "qwen3-tiny";
const exp = readExpected(name);
const mbs = exp.micro_batches.map(toMicroBatch);

async function grads(model: DecoderLM): Promise<{ flat: Float32Array[]; loss: number; events: string[] }> {
  const events: string[] = [];
  model.addHooks({
    beforeUnitForward: (u) => void events.push(`F${u}`),
    afterUnitForward: async (u) => void events.push(`f${u}`), // async hooks are awaited too
    beforeUnitBackward: (u) => void events.push(`B${u}`),
    afterUnitBackward: (u) => void events.push(`b${u}`),
  });
  model.zeroGrads();
  const loss = k.alloc([1]);
  for (const mb of mbs) {
    await model.forward(mb, loss, 1 / exp.global_valid_tokens);
    await model.backward();
  }
  return { flat: await Promise.all(model.grads!.map((g) => k.read(g))), loss: (await k.read(loss))[0], events };
}

test("gradient checkpointing on/off: identical loss and gradients, less activation memory", async () => {
  const off = loadPretrained(k, `${FIXTURES}${name}`, { maxTokens: 16, gradientCheckpointing: false });
  const on = loadPretrained(k, `${FIXTURES}${name}`, { maxTokens: 16, gradientCheckpointing: true });
  const a = await grads(off);
  const b = await grads(on);
  expect(b.loss).toBe(a.loss);
  expect(a.flat.length).toBe(b.flat.length);
  for (let u = 0; u < a.flat.length; u++) expect(Buffer.from(b.flat[u].buffer).equals(Buffer.from(a.flat[u].buffer))).toBe(true);
  expect(a.flat.some((g) => g.some((x) => x !== 0))).toBe(true);
  expect(on.activationBytes).toBeLessThan(off.activationBytes);
  // unit order per micro-batch: forward 0..H, backward H..0 (H = L + 1 = 3)
  const one = ["F0", "f0", "F1", "f1", "F2", "f2", "F3", "f3", "B3", "b3", "B2", "b2", "B1", "b1", "B0", "b0"];
  expect(a.events).toEqual([...one, ...one]);
  expect(b.events).toEqual(a.events);
});
