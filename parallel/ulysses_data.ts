// Ulysses' collator (VeOmni's SequenceParallelCollator): one packed row -> this rank's slice.
//   1. shift the labels over the WHOLE row (labels[t] <- labels[t+1], last -100), so the token
//      that ends one rank's slice is scored against the first label of the next rank's slice;
//   2. pad to Tp = P * ceil(T / P): input ids 0, labels -100, position ids 0;
//   3. cu_seqlens from the padded row's position ids (every 0 starts a sequence, so each pad
//      token is a sequence of its own and no real token attends to padding);
//   4. keep the contiguous slice [r * Tp/P, (r+1) * Tp/P) of ids, labels and position ids.
// Every rank of a Ulysses group holds the same row (same data coordinate), so the slices tile it.
import { IGNORE_INDEX, type MicroBatch } from "../data/index.ts";

/** Rank r's slice of `mb` for a Ulysses group of P ranks (see the header). */
export function ulyssesSlice(mb: MicroBatch, P: number, r: number): MicroBatch {
  if (mb.seqParallel) throw new Error("ulyssesSlice: micro-batch is already a sequence-parallel slice");
  if (mb.pixelValues) throw new Error("train.ulysses_parallel_size > 1 with image samples: sequence parallelism of vision-language rows is not implemented yet (expected text-only data)");
  const T = mb.inputIds.length;
  const Tl = Math.ceil(T / P);
  const Tp = Tl * P;
  const lo = r * Tl;
  const inputIds = new Int32Array(Tl); // zero = pad id
  const labels = new Int32Array(Tl).fill(IGNORE_INDEX);
  const positionIds = new Int32Array(Tl); // zero = pad position
  let validTokens = 0;
  for (let i = 0; i < Tl; i++) {
    const t = lo + i;
    if (t >= T) break;
    inputIds[i] = mb.inputIds[t];
    positionIds[i] = mb.positionIds[t];
    if (t + 1 < T) labels[i] = mb.labels[t + 1];
    if (labels[i] !== IGNORE_INDEX) validTokens++;
  }
  // boundaries of the whole padded row from its position ids
  const starts: number[] = [];
  for (let t = 0; t < Tp; t++) if (t >= T || mb.positionIds[t] === 0) starts.push(t);
  if (starts[0] !== 0) throw new Error(`ulyssesSlice: position_ids of a packed row must start at 0, got ${mb.positionIds[0]}`);
  const cuSeqlens = Int32Array.from([...starts, Tp]);
  return { inputIds, labels, positionIds, cuSeqlens, validTokens, seqParallel: { offset: lo, fullLength: Tp, realTokens: Math.max(0, Math.min(Tl, T - lo)) } };
}
