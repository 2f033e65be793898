// Ulysses' pure parts: the collator's slices (shift, pad, cu_seqlens, slice) against the packed
// row they come from, and the head-count checks that refuse impossible groups by name.
import { expect, test } from "bun:test";
import { IGNORE_INDEX, packMicroBatch } from "../../data/index.ts";
import { ulyssesHeads, ulyssesSlice } from "../../parallel/index.ts";

const sample = (n: number, base: number) => ({ ids: Int32Array.from({ length: n }, (_, i) => base + i), labels: Int32Array.from({ length: n }, (_, i) => base + i) });

test("slices of a packed row: labels shifted over the whole row, padded to a multiple of P, cu_seqlens of the padded row", () => {
  // 3 samples of 4, 3, 4 tokens = 11 tokens; P = 4 -> padded to 12, slices of 3 (samples cross slices)
  const mb = packMicroBatch([sample(4, 10), sample(3, 20), sample(4, 30)]);
  const P = 4;
  const parts = Array.from({ length: P }, (_, r) => ulyssesSlice(mb, P, r));
  const cat = (f: (m: (typeof parts)[0]) => Int32Array) => parts.flatMap((p) => [...f(p)]);
  expect(cat((p) => p.inputIds)).toEqual([10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 33, 0]);
  expect(cat((p) => p.positionIds)).toEqual([0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 0]);
  const X = IGNORE_INDEX; // the first label of a later sample is -100 (packing), so the shifted row has it at the end of the sample before
  expect(cat((p) => p.labels)).toEqual([11, 12, 13, X, 21, 22, X, 31, 32, 33, X, X]);
  for (const p of parts) expect([...p.cuSeqlens]).toEqual([0, 4, 7, 11, 12]); // the pad token is a sequence of its own
  expect(parts.map((p) => p.seqParallel)).toEqual([0, 3, 6, 9].map((offset, r) => ({ offset, fullLength: 12, realTokens: r < 3 ? 3 : 2 })));
  expect(parts.reduce((a, p) => a + p.validTokens, 0)).toBe(mb.validTokens);
  // a row shorter than the group: the last ranks hold only padding
  const tiny = ulyssesSlice(packMicroBatch([sample(2, 5)]), 4, 3);
  expect([[...tiny.inputIds], [...tiny.labels], tiny.validTokens, tiny.seqParallel!.realTokens]).toEqual([[0], [X], 0, 0]);
  expect(() => ulyssesSlice(parts[0], 2, 0)).toThrow("already a sequence-parallel slice");
});

test("head counts: query heads split, KV heads split or repeated, impossible groups refused naming the fields", () => {
  expect(ulyssesHeads(2, 8, 4)).toEqual({ hq: 4, hkv: 2, rep: 1 });
  expect(ulyssesHeads(4, 8, 2)).toEqual({ hq: 2, hkv: 1, rep: 2 });
  expect(ulyssesHeads(4, 4, 1)).toEqual({ hq: 1, hkv: 1, rep: 4 });
  expect(() => ulyssesHeads(3, 4, 2)).toThrow("train.ulysses_parallel_size(3) must divide num_attention_heads(4)");
  expect(() => ulyssesHeads(4, 8, 6)).toThrow("train.ulysses_parallel_size(4) must divide num_key_value_heads(6)");
  expect(() => ulyssesHeads(4, 12, 3)).toThrow("train.ulysses_parallel_size(4) above num_key_value_heads(3) must be a multiple of it");
});
