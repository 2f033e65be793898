// Shared helpers for test/models: fixture paths, micro-batches from expected.json, max |a-b|.
import { readFileSync } from "node:fs";
import type { MicroBatch } from "../../data/batch.ts";

export const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

export interface Expected {
  micro_batches: { input_ids: number[]; labels: number[]; position_ids: number[]; cu_seqlens: number[]; valid_tokens: number }[];
  global_valid_tokens: number;
  train: { lr: number; weight_decay: number; max_grad_norm: number };
  steps: { loss: number; grad_norm: number }[];
}

export function readExpected(name: string): Expected {
  return JSON.parse(readFileSync(`${FIXTURES}${name}/expected.json`, "utf8"));
}

export function toMicroBatch(m: Expected["micro_batches"][number]): MicroBatch {
  return {
    inputIds: Int32Array.from(m.input_ids), labels: Int32Array.from(m.labels), positionIds: Int32Array.from(m.position_ids),
    cuSeqlens: Int32Array.from(m.cu_seqlens), validTokens: m.valid_tokens,
  };
}

/** One packed row of a single sample: positions 0..T-1, labels = ids. */
export function singleRow(ids: number[]): MicroBatch {
  const T = ids.length;
  return {
    inputIds: Int32Array.from(ids), labels: Int32Array.from(ids), positionIds: Int32Array.from({ length: T }, (_, i) => i),
    cuSeqlens: Int32Array.from([0, T]), validTokens: T - 1,
  };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
