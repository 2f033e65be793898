// Mixed precision for the plans that hold whole units (one process, DDP), as PyTorch FSDP2's
// MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=f32) at world size 1: the f32 master
// weights stay where the optimizer and checkpoints see them (model.params[u] between uses); each
// use of a unit casts its compute copy (the f32 masters rounded to bf16, kernels' Bf16Params)
// into a buffer swapped into model.params[u] for that use, and frees it afterwards, by FSDP's
// reshard rules (parallel/fsdp.ts, train.enable_full_shard):
//   full shard (ZeRO-3, reshard_after_forward): cast before a unit's forward, freed after it;
//     cast again before its backward (activation-checkpointing recomputes run inside it), freed
//     after it. The head stays from its forward to its backward (next in line); a tied head casts
//     unit 0 again for its forward (freed after it). Unit 0's backward (embedding) reads no
//     params: no cast.
//   otherwise (ZeRO-2): a unit's copy, cast at its first use, stays until the step's last
//     backward (one cast per unit and step).
// Whatever is still cast at the step's last backward (syncGrads, before clipping and AdamW) is
// freed there, so the optimizer, checkpoints and evaluations see the masters. The masters never
// change inside a step, so every cast of a unit gives the same bits: the rules change memory, not
// numerics. Gradients stay f32 and are reduced in f32 (DDP's all-reduce). FSDP casts its shards
// before its bf16 all-gathers instead.
//
// Memory: the copies live in ranges of FSDP's shared buffers (fsdp_buffers.ts: first fit, freed
// neighbours merge), one range per copy: N f32 (the bf16 values the model reads) + N bf16 bits
// where the bf16 GEMM reads them (oneDNN) = 6 bytes per parameter, else 4 (the bits go through
// one scratch buffer). Full shard: the units in use at once (the head + one layer, or the tied
// embedding + the head; + the layer's experts unit for MoE), the high-water mark about the
// largest unit's copy; ZeRO-2: every unit's copy.
import type { Bf16Params, Kernels, Tensor } from "../kernels/index.ts";
import type { DecoderLM } from "../models/index.ts";
import type { StepCollectives } from "./collectives.ts";
import { FsdpBuffers, type Range } from "./fsdp_buffers.ts";

type F32 = Tensor<"f32">;

interface Copy {
  master: F32; // the unit's f32 params, swapped out while the copy is in use
  f32: F32; // (N) bf16 values as f32: what the model computes with
  range: Range; // f32 then (oneDNN) the bits: N + ceil(N / 2) f32 elements
}

export class MixedParams {
  private live: (Copy | null)[];
  private bufs: FsdpBuffers;
  private scratch = new Uint16Array(0); // bits when the GEMM does not keep them (emulated)
  private readonly H: number;
  private readonly tied: boolean;

  /** `fullShard`: train.enable_full_shard (free each copy after its use, as FSDP's ZeRO-3). */
  constructor(k: Kernels, private p: Bf16Params, private model: DecoderLM, private fullShard: boolean) {
    const units = model.layout.units;
    this.live = units.map(() => null);
    this.H = model.headUnit;
    this.tied = units[this.H].reads.includes(0);
    this.bufs = new FsdpBuffers(k, Math.max(...units.map((u) => this.rangeLen(u.numel))));
    model.addHooks({
      beforeUnitForward: (u) => {
        this.use(u);
        if (u === this.H && this.tied) this.use(0); // the head reads the tied embedding
      },
      afterUnitForward: (u) => {
        if (!this.fullShard) return;
        if (u === this.H && this.tied) this.drop(0);
        if (u !== this.H) this.drop(u); // the head's backward comes next
      },
      beforeUnitBackward: (u) => {
        if (u !== 0) this.use(u); // unit 0's backward (embedding) reads no params
      },
      afterUnitBackward: (u) => {
        if (this.fullShard) this.drop(u);
      },
    });
  }

  /** f32 elements of a copy's range: the values, then the bits where the GEMM keeps reading them. */
  private rangeLen(N: number): number {
    return this.p.readsBits ? N + Math.ceil(N / 2) : N;
  }

  /** Unit u's compute copy cast from its master into a free range, unless it is in use already. */
  private use(u: number): void {
    if (this.live[u]) return;
    const master = this.model.params[u];
    const N = master.numel;
    const range = this.bufs.acquire(this.rangeLen(N));
    const f32 = this.bufs.tensor(range, N, u);
    let bits: Uint16Array;
    if (this.p.readsBits) {
      const h = this.bufs.host(range);
      bits = new Uint16Array(h.buffer, h.byteOffset + 4 * N, N); // the range's tail
    } else {
      if (this.scratch.length < N) this.scratch = new Uint16Array(N);
      bits = this.scratch.subarray(0, N);
    }
    this.p.cast(bits, master.host!);
    this.p.load(f32, bits);
    this.model.params[u] = f32;
    this.live[u] = { master, f32, range };
  }

  /** Unit u's master back into model.params and its copy's range free. */
  private drop(u: number): void {
    const c = this.live[u];
    if (!c) return;
    this.p.release(c.f32);
    this.model.params[u] = c.master;
    this.bufs.release(c.range);
    this.live[u] = null;
  }

  /** Masters back into model.params (before the optimizer, a checkpoint or an evaluation). */
  end(): void {
    for (let u = 0; u < this.live.length; u++) this.drop(u);
  }

  /** Bytes of the copies' buffers (their high-water mark): the plan's stateBytes. */
  get bufferBytes(): number {
    return 4 * this.bufs.numel;
  }

  /** The plan's collectives with the masters swapped back after the step's last backward. */
  wrap(inner: StepCollectives): StepCollectives {
    return {
      allReduceSum: (x) => inner.allReduceSum(x),
      syncGrads: async (model) => {
        await inner.syncGrads(model); // collective: DDP all-reduce (f32 gradients)
        this.end();
      },
    };
  }
}
