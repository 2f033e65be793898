// Learning-rate schedule of VeOmni v0.1 (seed/veomni-config-v0.1.md "Fixed choices"), a pure
// function of the 0-based optimizer step. Field names follow the config (train.lr, lr_min, ...).

export type LrDecayStyle = "constant" | "linear" | "cosine";

export interface LrScheduleOptions {
  lr: number;
  lr_min: number;
  lr_start: number;
  /** Total optimizer steps. */
  train_steps: number;
  lr_warmup_ratio: number;
  lr_decay_style: LrDecayStyle;
  lr_decay_ratio: number;
}

/** Learning rate at 0-based `step`. */
export function lrAt(step: number, o: LrScheduleOptions): number {
  const warmup = Math.floor(o.train_steps * o.lr_warmup_ratio);
  if (step < warmup) return o.lr_start + ((o.lr - o.lr_start) * step) / Math.max(1, warmup);
  const m = o.lr > 0 ? o.lr_min / o.lr : 0;
  switch (o.lr_decay_style) {
    case "constant":
      return o.lr;
    case "linear":
      return o.lr * Math.max(m, (o.train_steps - step) / Math.max(1, o.train_steps - warmup));
    case "cosine": {
      const decay = Math.floor(o.train_steps * o.lr_decay_ratio);
      if (step > decay) return o.lr_min;
      const progress = (step - warmup) / Math.max(1, decay - warmup);
      return o.lr * (m + (1 - m) * 0.5 * (1 + Math.cos(Math.PI * progress)));
    }
    default: {
      const never: never = o.lr_decay_style;
      throw new Error(`lrAt: train.lr_decay_style "${String(never)}" is not constant, linear or cosine`);
    }
  }
}
