// Padding-free packing (VeOmni rmpad_with_pos_ids) and the dynamic-batching choice.
import { IGNORE_INDEX, type MicroBatch } from "./batch.ts";
import type { Sample } from "./samples.ts";
import { stackImages, type PreprocessorConfig, type ResizedImage } from "./images/qwen2vl.ts";

/** S samples -> one row of T = sum(L_s) tokens: ids and labels concatenated, position ids
 *  restarting at 0 per sample, cuSeqlens (S+1), and the first label of every later sample set to
 *  IGNORE_INDEX so no position predicts across a boundary (labels are not shifted: the model
 *  scores logits[t-1] against labels[t]). The samples' images, in order, become pixelValues and
 *  imageGridThw (normalised and patchified here, so the buffer holds only uint8 pixels). */
export function packMicroBatch(samples: Sample[], pp: PreprocessorConfig | null = null): MicroBatch {
  let T = 0;
  for (const s of samples) T += s.ids.length;
  const inputIds = new Int32Array(T);
  const labels = new Int32Array(T);
  const positionIds = new Int32Array(T);
  const cuSeqlens = new Int32Array(samples.length + 1);
  let off = 0;
  samples.forEach((s, k) => {
    const L = s.ids.length;
    inputIds.set(s.ids, off);
    labels.set(s.labels, off);
    if (k > 0) labels[off] = IGNORE_INDEX;
    for (let i = 0; i < L; i++) positionIds[off + i] = i;
    off += L;
    cuSeqlens[k + 1] = off;
  });
  let validTokens = 0;
  for (let t = 1; t < T; t++) if (labels[t] !== IGNORE_INDEX) validTokens++;
  const images: ResizedImage[] = samples.flatMap((s) => s.images ?? []);
  if (images.length === 0) return { inputIds, labels, positionIds, cuSeqlens, validTokens, pixelValues: null, imageGridThw: null };
  if (!pp) throw new Error("packMicroBatch: samples carry images but no preprocessor config was given");
  const { pixelValues, imageGridThw } = stackImages(images, pp);
  return { inputIds, labels, positionIds, cuSeqlens, validTokens, pixelValues, imageGridThw };
}

/** Greedy first-fit in insertion order: indices of the buffered samples (lengths `lens`) that go
 *  into one micro-batch of at most `budget` tokens. Scans the whole buffer, taking every sample
 *  that still fits, and stops early once the budget is exactly full. If not even the first
 *  sample fits (only possible while the budget ramps up under bsz_warmup_ratio, or with
 *  dyn_bsz_margin, since samples are at most max_seq_len), that one sample is taken alone:
 *  the single documented case where a micro-batch exceeds its budget. */
export function firstFit(lens: ArrayLike<number>, budget: number): number[] {
  const chosen: number[] = [];
  let used = 0;
  for (let i = 0; i < lens.length && used < budget; i++) {
    if (used + lens[i] <= budget) { chosen.push(i); used += lens[i]; }
  }
  if (chosen.length === 0 && lens.length > 0) chosen.push(0);
  return chosen;
}

/** One dynamic micro-batch (VeOmni's dynamic batching): refill the buffer until it holds at least
 *  `bufferSize` samples and `budget` tokens (or `fill` says the data has ended), then take the
 *  first-fit choice out of it, in buffer order. null when the buffer is empty at the end of the
 *  data. The loader and its epoch plan (plan.ts) both batch through this, so the plan counts the
 *  very micro-batches the loader makes. */
export async function takeDynamic<T>(buf: T[], len: (x: T) => number, fill: () => Promise<boolean> | boolean, bufferSize: number, budget: number): Promise<T[] | null> {
  let tokens = 0;
  for (const b of buf) tokens += len(b);
  while (buf.length < bufferSize || tokens < budget) {
    if (!(await fill())) break;
    tokens += len(buf[buf.length - 1]);
  }
  if (buf.length === 0) return null;
  const chosen = firstFit(buf.map(len), budget);
  const take = new Set(chosen);
  const out = chosen.map((i) => buf[i]);
  let w = 0;
  for (let i = 0; i < buf.length; i++) if (!take.has(i)) buf[w++] = buf[i];
  buf.length = w;
  return out;
}

/** VeOmni's padding micro-batch (its `padding_flag`) for a rank whose share of the data is used
 *  up before the last step (data.drop_last false): one token that carries no loss, so the rank
 *  still joins every collective, with zero contribution (validTokens 0: the global token
 *  normalisation counts only the real samples' tokens). */
export function paddingMicroBatch(): MicroBatch {
  return { ...packMicroBatch([{ ids: Int32Array.of(0), labels: Int32Array.of(IGNORE_INDEX) }]), padding: true };
}

/** Token budget of one micro-batch at `step` (VeOmni bsz warmup): rises linearly from
 *  `initTokens` to `full` over the first floor(trainSteps * ratio) steps, then stays at `full`. */
export function budgetAt(step: number, full: number, ratio: number, initTokens: number, trainSteps: number): number {
  const warm = Math.floor(trainSteps * ratio);
  if (warm <= 0 || step >= warm) return full;
  return Math.min(full, Math.floor(initTokens + ((full - initTokens) * step) / warm));
}
