// Mixed precision for the plans that hold whole units (one process, DDP), as PyTorch FSDP2's
// MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=f32) at world size 1: the f32 master
// weights stay where the optimizer and checkpoints see them (model.params[u] between steps);
// the first time a unit is used in a step its compute copy is cast once (the f32 masters rounded
// to bf16, kernels' Bf16Params) and swapped into model.params[u] for every forward, recompute
// and backward of the step; after the step's last backward (syncGrads, before the optimizer) the
// masters are swapped back. Gradients stay f32 and are reduced in f32 (DDP's all-reduce).
// FSDP casts its shards before its bf16 all-gathers instead (parallel/fsdp.ts).
//
// Memory: one compute copy per unit, all alive from the end of the forward to the last
// backward (4 bytes per parameter, plus 2 where the bf16 GEMM reads the bf16 bits: oneDNN),
// like torch.autocast's cache of cast weights.
import type { Bf16Params, Kernels, Tensor } from "../kernels/index.ts";
import type { DecoderLM } from "../models/index.ts";
import type { StepCollectives } from "./collectives.ts";

type F32 = Tensor<"f32">;

interface Copy {
  master: F32; // the unit's f32 params, swapped out while the copy is in use
  f32: F32; // (N) bf16 values as f32: what the model computes with
  bits: Uint16Array; // (N) the same values as bf16 (read by the GEMM when readsBits)
}

export class MixedParams {
  private copies: (Copy | null)[];
  private inUse = new Set<number>();
  private scratch = new Uint16Array(0); // bits when the GEMM does not keep them (emulated)

  constructor(private k: Kernels, private p: Bf16Params, private model: DecoderLM) {
    this.copies = model.layout.units.map(() => null);
    model.addHooks({
      beforeUnitForward: (u) => this.use(u),
      beforeUnitBackward: (u) => this.use(u),
    });
  }

  /** Unit u's compute copy, cast from its master the first time it is used this step. */
  private use(u: number): void {
    if (this.inUse.has(u)) return;
    const master = this.model.params[u];
    const N = master.numel;
    let c = this.copies[u];
    if (!c) {
      const name = this.model.layout.units[u].name;
      const bits = this.p.readsBits ? new Uint16Array(N) : this.scratch.length >= N ? this.scratch.subarray(0, N) : (this.scratch = new Uint16Array(N));
      c = this.copies[u] = { master, f32: this.k.alloc([N], "f32", { shared: false, name: `${name}.bf16_params` }), bits };
    }
    if (!this.p.readsBits) c.bits = this.scratch.subarray(0, N);
    c.master = master;
    this.p.cast(c.bits, master.host!);
    this.p.load(c.f32, c.bits);
    this.model.params[u] = c.f32;
    this.inUse.add(u);
    // the head reads the tied embedding (unit 0) too: it was cast at unit 0's forward
  }

  /** Masters back into model.params (before the optimizer, a checkpoint or an evaluation). */
  end(): void {
    for (const u of this.inUse) {
      const c = this.copies[u]!;
      this.p.release(c.f32);
      this.model.params[u] = c.master;
    }
    this.inUse.clear();
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
