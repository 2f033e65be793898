// The unit of work every trainer consumes: one padding-free packed row (VeOmni rmpad).
// A micro-batch concatenates whole samples into one row of T tokens; attention never crosses
// the sample boundaries given by `cuSeqlens`. This file is the contract between data/ and the
// compute side; it imports nothing.

export interface MicroBatch {
  /** (T) token ids of the concatenated samples. */
  inputIds: Int32Array;
  /** (T) labels in Hugging Face convention (NOT shifted): usually labels[t] = inputIds[t]; the
   *  model shifts, so logits at t are scored against labels[t+1] (nothing for t = T-1).
   *  -100 means no loss: non-assistant turns, padding, and the first label of each later
   *  sample (as VeOmni packs), so no position predicts across a sample boundary. */
  labels: Int32Array;
  /** (T) position ids, restarting at 0 at each sample start. */
  positionIds: Int32Array;
  /** (S+1) sample boundaries: sample s spans [cuSeqlens[s], cuSeqlens[s+1]); cuSeqlens[0]=0, cuSeqlens[S]=T. */
  cuSeqlens: Int32Array;
  /** Count of labels[1..T-1] != -100, the positions that carry loss in this micro-batch (the loss normaliser is the sum over the global step). */
  validTokens: number;
  /** (total_patches, 3*temporal_patch*patch^2 = 1176 for Qwen2-VL) the images of this row, in the
   *  order they appear in inputIds, rows in transformers' Qwen2VLImageProcessor patch order.
   *  null (or absent, in batches made outside data/) when the row has no image. */
  pixelValues?: Float32Array | null;
  /** (n_images, 3) t, h, w of each image in patches, in order; inputIds hold t*h*w/merge^2
   *  image_token_id tokens for each (labels -100 there). null when the row has no image. */
  imageGridThw?: Int32Array | null;
  /** Set only by a sequence-parallel plan (Ulysses, never by the loader): this row is one rank's
   *  contiguous slice [offset, offset + T) of a packed row padded to fullLength (a multiple of the
   *  group size). Then, as VeOmni's SequenceParallelCollator: `labels` are ALREADY SHIFTED over
   *  the whole row (labels[t] scores logits[t]; the model does not shift again; validTokens counts
   *  labels[0..T-1] != -100), `cuSeqlens` are the boundaries of the whole padded row (from its
   *  position ids: every 0 starts a sequence), and realTokens counts the slice's unpadded tokens. */
  seqParallel?: { offset: number; fullLength: number; realTokens: number };
  /** VeOmni's padding_flag: no sample, one token without loss (data.drop_last false, a rank whose
   *  share of the data is used up before the last step; packing.ts paddingMicroBatch). */
  padding?: boolean;
}

/** One optimizer step's share of one data-parallel rank: its micro-batches in order. */
export interface StepBatch {
  /** 0-based optimizer step these micro-batches belong to. */
  step: number;
  microBatches: MicroBatch[];
}

export const IGNORE_INDEX = -100;
