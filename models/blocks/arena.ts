// Activation buffers, allocated once for a capacity of Tmax tokens and viewed at the micro-batch's
// T tokens (kernels check exact element counts, so every op gets a view of exactly T rows).
// Counts bytes so the trainer can report the activation footprint.
import type { Kernels, Tensor } from "../../kernels/index.ts";

export type F32 = Tensor<"f32">;
export type I32 = Tensor<"i32">;

/** A buffer of capacity (Tmax, width); `at(T)` is its first T rows as a flat view. */
export class Buf {
  constructor(private k: Kernels, readonly full: F32, readonly width: number) {}
  at(T: number): F32 {
    return T * this.width === this.full.numel ? this.full : this.k.view(this.full, 0, [T * this.width]);
  }
}

/** An i32 buffer of capacity (Tmax, width), viewed like Buf (MoE route indices). */
export class IBuf {
  constructor(private k: Kernels, readonly full: I32, readonly width: number) {}
  at(T: number): I32 {
    return T * this.width === this.full.numel ? this.full : this.k.view(this.full, 0, [T * this.width]);
  }
}

export class Arena {
  bytes = 0;
  constructor(readonly k: Kernels, readonly Tmax: number) {}
  /** (Tmax, width) f32 buffer. */
  buf(width: number, name: string): Buf {
    this.bytes += this.Tmax * width * 4;
    return new Buf(this.k, this.k.alloc([this.Tmax * width], "f32", { shared: false, name }), width);
  }
  /** (Tmax, width) i32 buffer. */
  ibuf(width: number, name: string): IBuf {
    this.bytes += this.Tmax * width * 4;
    return new IBuf(this.k, this.k.alloc([this.Tmax * width], "i32", { shared: false, name }), width);
  }
}

/** The device-side inputs of one packed micro-batch (see data/batch.ts), viewed at T tokens. */
export interface BatchInputs {
  T: number;
  /** Samples in the row (cuSeqlens has S+1 entries). */
  S: number;
  ids: I32;
  positions: I32;
  cuSeqlens: I32;
  /** Shifted labels: targets[t] = labels[t+1], last -100. */
  targets: I32;
}
