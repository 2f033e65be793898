// Host-side optimizer helpers (pure): the clip coefficient of torch.nn.utils.clip_grad_norm_.

/** Clip coefficient for a global L2 grad norm: min(1, maxNorm / (norm + 1e-6)), as PyTorch.
 *  maxNorm <= 0 or non-finite disables clipping (returns 1). Multiply grads by it (or pass it as
 *  AdamWParams.gradScale). */
export function clipCoefficient(totalNorm: number, maxNorm: number): number {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) return 1;
  return Math.min(1, maxNorm / (totalNorm + 1e-6));
}

/** Targets for next-token loss from HF-convention labels (T): targets[t] = labels[t+1], last = -100. */
export function shiftLabels(targets: Int32Array, labels: Int32Array): void {
  if (targets.length !== labels.length) throw new Error(`shiftLabels: targets (${targets.length}) and labels (${labels.length}) differ in length`);
  const T = labels.length;
  for (let t = 0; t + 1 < T; t++) targets[t] = labels[t + 1];
  if (T > 0) targets[T - 1] = -100;
}
