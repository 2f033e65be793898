// DDP: every rank holds the whole model; gradients are summed over the data-parallel group.
// Each unit's all-reduce starts as soon as that unit's backward of the step's LAST micro-batch
// ends (the transport thread runs it while earlier units still compute: bucketed overlap, one
// bucket per unit); syncGrads waits for them. Sums, not means: the loss is already divided by
// the step's global valid tokens, so the summed gradient is the exact token mean.
import type { DecoderLM } from "../models/index.ts";
import { sharedF32, type CommGroup } from "../mesh/index.ts";
import type { StepCollectives } from "./collectives.ts";

export class Ddp implements StepCollectives {
  private pending: Promise<void>[] = [];
  private micro = 0;
  private nMicro = 1;
  private afterSync = false;

  constructor(private model: DecoderLM, private world: CommGroup) {
    const grads = model.allocGrads();
    const last = model.backwardUnits.at(-1); // a micro-batch's backward ends with this unit
    for (const g of grads) if (!(g.host?.buffer instanceof SharedArrayBuffer)) throw new Error(`ddp: grads of ${g.shape} are not SharedArrayBuffer-backed (cpu backend needed)`);
    model.addHooks({
      afterUnitBackward: (u) => {
        // order: head, L..1, 0 (then the vision units of VL models; see model.backwardUnits)
        if (this.micro === this.nMicro - 1) this.pending.push(this.world.allReduce(model.grads![u].host as Float32Array));
        if (u === last) this.micro++;
      },
    });
  }

  /** Call before Trainer.step with the number of micro-batches of this rank's step. */
  beginStep(nMicro: number): void {
    this.micro = 0;
    this.nMicro = nMicro;
    this.afterSync = false;
  }

  async allReduceSum(x: number): Promise<number> {
    // The Trainer's first reduction after syncGrads is the squared grad norm: after the
    // all-reduce every rank holds the full gradient, so it is already global.
    if (this.afterSync) {
      this.afterSync = false;
      return x;
    }
    const b = sharedF32(1);
    b[0] = x;
    await this.world.allReduce(b); // collective: scalar sum over the DP group
    return b[0];
  }

  async syncGrads(): Promise<void> {
    if (this.micro !== this.nMicro) throw new Error(`ddp: syncGrads after ${this.micro} of ${this.nMicro} micro-batch backwards (beginStep not called with the step's count?)`);
    await Promise.all(this.pending.splice(0)); // collective: the per-unit gradient all-reduces
    this.afterSync = true;
  }
}
