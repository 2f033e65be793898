// data.drop_last false with dynamic batching: how many optimizer steps the run has, known before
// the first one and equal on every rank. The ranks' shares of an epoch hold different token
// counts, so their dynamic batching ends after different numbers of micro-batches; with
// drop_last false every rank runs to the longest rank's last step (ranks that run out first get
// padding micro-batches, packing.ts paddingMicroBatch). Each rank plans every rank's batching
// from the token lengths of all samples (the same numbers everywhere, so no message is needed),
// through the loader's own batching step (takeDynamic): the plan counts exactly the
// micro-batches the ranks' loaders will make.
import { takeDynamic } from "./packing.ts";
import { defaultStream, streamAt } from "./state.ts";

export interface DynamicPlanInput {
  /** Token length of the sample at position `pos` of epoch `epoch`'s order; -1 for a bad sample
   *  that is skipped (data.on_bad_sample: skip). */
  lengthAt(epoch: number, pos: number): number;
  /** Samples per epoch, data-parallel ranks, epochs, micro-batches per optimizer step. */
  total: number;
  dpSize: number;
  epochs: number;
  gradAccum: number;
  /** train.dyn_bsz_buffer_size */
  bufferSize: number;
  /** Token budget of the micro-batches of optimizer step `step` (bsz warmup). */
  budget(step: number): number;
}

/** Optimizer steps of each data-parallel rank (index = rank) until its share of every epoch is
 *  packed, the last step counted even when it has fewer than gradAccum micro-batches. A rank reads
 *  positions r, r+D, r+2D... of each epoch in turn, its buffer carrying over epoch ends, as the
 *  loader does from a fresh state. */
export async function planDynamicSteps(p: DynamicPlanInput): Promise<number[]> {
  const steps: number[] = [];
  for (let r = 0; r < p.dpSize; r++) {
    let epoch = 0, cursor = 0;
    const buf: number[] = []; // token lengths of the buffered samples
    const fill = (): boolean => {
      for (;;) {
        if (epoch >= p.epochs) return false;
        const pos = streamAt(defaultStream(epoch, r, p.dpSize), cursor, p.total);
        if (pos < 0) { epoch++; cursor = 0; continue; }
        cursor++;
        const len = p.lengthAt(epoch, pos);
        if (len >= 0) { buf.push(len); return true; }
      }
    };
    let micro = 0;
    while (await takeDynamic(buf, (x) => x, fill, p.bufferSize, p.budget(Math.floor(micro / p.gradAccum)))) micro++;
    steps.push(Math.ceil(micro / p.gradAccum));
  }
  return steps;
}
