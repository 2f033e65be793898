// The unit of work every trainer consumes: one padding-free packed row (VeOmni rmpad).
// A micro-batch concatenates whole samples into one row of T tokens; attention never crosses
// the sample boundaries given by `cuSeqlens`. This file is the contract between data/ and the
// compute side; it imports nothing.

export interface MicroBatch {
  /** (T) token ids of the concatenated samples. */
  inputIds: Int32Array;
  /** (T) next-token targets aligned with inputIds (labels[t] is the target predicted at t);
   *  -100 where no loss is taken: non-assistant turns, the first label of each later sample
   *  as VeOmni does, and the last token of each sample. */
  labels: Int32Array;
  /** (T) position ids, restarting at 0 at each sample start. */
  positionIds: Int32Array;
  /** (S+1) sample boundaries: sample s spans [cuSeqlens[s], cuSeqlens[s+1]); cuSeqlens[0]=0, cuSeqlens[S]=T. */
  cuSeqlens: Int32Array;
  /** Count of labels != -100 in this micro-batch (the loss normaliser is the sum over the global step). */
  validTokens: number;
}

/** One optimizer step's share of one data-parallel rank: its micro-batches in order. */
export interface StepBatch {
  /** 0-based optimizer step these micro-batches belong to. */
  step: number;
  microBatches: MicroBatch[];
}

export const IGNORE_INDEX = -100;
