// tiny-random-llama-2 (BF16 weights) against Hugging Face transformers' own numbers: last-position
// logits at sampled vocabulary indices within 1e-5, and the 4-token greedy continuation, both by
// full recompute and through the KV cache.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { createKernels } from "../../kernels/index.ts";
import { argmax, generate, loadPretrained } from "../../models/index.ts";
import { FIXTURES, singleRow } from "./fixtures.ts";

const dir = `${FIXTURES}tiny-random-llama-2`;
const ref = JSON.parse(readFileSync(`${dir}/reference_logits.json`, "utf8")) as {
  logit_tolerance: { absolute: number; relative: number };
  model_cases: { input_ids: number[]; greedy_token: number; greedy_continuation: number[]; sampled_logits: Record<string, number> }[];
};
const k = await createKernels({ backend: "cpu", threads: 1 });
const model = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
const V = model.config.V;

test("config: llama, untied, 2 layers, vocab 3000", () => {
  expect([model.config.modelType, model.config.tied, model.config.L, V]).toEqual(["llama", false, 2, 3000]);
});

for (const c of ref.model_cases) {
  test(`logits for input_ids [${c.input_ids}] match HF within 1e-5`, async () => {
    const logits = await model.logits(singleRow(c.input_ids));
    const last = logits.subarray((c.input_ids.length - 1) * V);
    for (const [idx, want] of Object.entries(c.sampled_logits)) {
      const got = last[Number(idx)];
      expect(Math.abs(got - want)).toBeLessThanOrEqual(ref.logit_tolerance.absolute + ref.logit_tolerance.relative * Math.abs(want));
    }
    expect(argmax(last)).toBe(c.greedy_token);
  });

  test(`greedy continuation of [${c.input_ids}] is identical (recompute and KV cache)`, async () => {
    const ids = [...c.input_ids];
    for (let i = 0; i < c.greedy_continuation.length; i++) {
      const logits = await model.logits(singleRow(ids));
      ids.push(argmax(logits.subarray((ids.length - 1) * V)));
    }
    expect(ids.slice(c.input_ids.length)).toEqual(c.greedy_continuation);
    const cached = await generate(model, Int32Array.from(c.input_ids), {
      maxTokens: c.greedy_continuation.length, doSample: false, temperature: 1, topP: 1, seed: 0, eosTokenIds: [],
    });
    expect(cached.generated).toEqual(c.greedy_continuation);
  });
}
