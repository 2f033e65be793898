// Autoregressive generation with a KV cache: prefill the prompt once, then one token per step.
// Greedy (argmax) or sampled with temperature and nucleus (top_p) from a seeded PRNG.
import type { DecoderLM } from "./decoder.ts";
import { mulberry32 } from "../data/rng.ts";

export interface GenerateOptions {
  maxTokens: number;
  doSample: boolean;
  temperature: number;
  topP: number;
  seed: number;
  /** Stop after emitting one of these ids (config eos_token_id); the id is kept in the output. */
  eosTokenIds: number[];
  /** Called with each generated id as soon as it is chosen (streaming output). */
  onToken?: (id: number) => void;
  /** Vision-language models: the prompt's images (pixel_values, image_grid_thw), fed at prefill;
   *  decoding continues the M-RoPE positions after them. */
  images?: { pixelValues: Float32Array; imageGridThw: Int32Array };
}

export interface GenerateResult {
  /** Prompt logits (T,V): row t scores the token after prompt[t]. */
  promptLogits: Float32Array;
  generated: number[];
}

export function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Sample from softmax(row / temperature) restricted to the smallest set with mass >= topP. */
export function sample(row: Float32Array, temperature: number, topP: number, rand: () => number): number {
  if (temperature <= 0) return argmax(row);
  const V = row.length;
  let mx = -Infinity;
  for (let i = 0; i < V; i++) mx = Math.max(mx, row[i]);
  const p = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += p[i] = Math.exp((row[i] - mx) / temperature);
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  let kept = 0;
  let mass = 0;
  while (kept < V && (kept === 0 || mass < topP * sum)) mass += p[order[kept++]];
  let r = rand() * mass;
  for (let i = 0; i < kept; i++) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[kept - 1];
}

/** Mean next-token cross-entropy over the prompt (rows 0..T-2 scored against prompt[1..]);
 *  targets in `ignore` carry no loss (VL models: the vision tokens, as training labels -100). */
export function promptLoss(logits: Float32Array, prompt: Int32Array, V: number, ignore: ReadonlySet<number> = new Set()): number {
  const T = prompt.length;
  let total = 0, n = 0;
  for (let t = 0; t + 1 < T; t++) {
    if (ignore.has(prompt[t + 1])) continue;
    n++;
    const row = logits.subarray(t * V, (t + 1) * V);
    let mx = -Infinity;
    for (let i = 0; i < V; i++) mx = Math.max(mx, row[i]);
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(row[i] - mx);
    total += mx + Math.log(s) - row[prompt[t + 1]];
  }
  return n ? total / n : NaN;
}

export async function generate(model: DecoderLM, prompt: Int32Array, o: GenerateOptions): Promise<GenerateResult> {
  const V = model.config.V;
  const cache = model.newKvCache(prompt.length + o.maxTokens);
  const rand = mulberry32(o.seed);
  const promptLogits = await model.forwardCached(prompt, cache, o.images);
  let row = promptLogits.subarray((prompt.length - 1) * V);
  const generated: number[] = [];
  for (let i = 0; i < o.maxTokens; i++) {
    const next = o.doSample ? sample(row, o.temperature, o.topP, rand) : argmax(row);
    generated.push(next);
    o.onToken?.(next);
    if (o.eosTokenIds.includes(next) || i + 1 === o.maxTokens) break;
    row = await model.forwardCached(Int32Array.of(next), cache);
  }
  return { promptLogits, generated };
}
