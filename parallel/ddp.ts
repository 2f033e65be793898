// DDP: every rank holds the whole model; gradients are summed over the data-parallel group.
// Each unit's all-reduce starts as soon as that unit's backward of the step's LAST micro-batch
// ends (the transport thread runs it while earlier units still compute: bucketed overlap, one
// bucket per unit); syncGrads waits for them. Sums, not means: the loss is already divided by
// the step's global valid tokens, so the summed gradient is the exact token mean.
// On a device backend each all-reduce is staged (staging.ts): the unit's grads are read back while
// the next unit computes, summed on the host ring, and uploaded; syncGrads waits for the uploads
// to be enqueued, so the optimizer's kernels run after them.
import type { Kernels } from "../kernels/index.ts";
import type { DecoderLM } from "../models/index.ts";
import { sharedF32, type CommGroup } from "../mesh/index.ts";
import type { StepCollectives } from "./collectives.ts";
import { Mirror, PostOrder } from "./staging.ts";

export class Ddp implements StepCollectives {
  private pending: Promise<void>[] = [];
  private micro = 0;
  private nMicro = 1;
  private afterSync = false;

  /** `order`: the rank's one PostOrder (staging.ts), shared with the other plans' staged collectives. */
  constructor(k: Kernels, private model: DecoderLM, private world: CommGroup, private order = new PostOrder()) {
    const grads = model.allocGrads().map((g) => new Mirror(k, g, "ddp grads"));
    const last = model.backwardUnits.at(-1); // a micro-batch's backward ends with this unit
    model.addHooks({
      afterUnitBackward: (u) => {
        // order: head, L..1, 0 (then the vision units of VL models; see model.backwardUnits)
        if (this.micro === this.nMicro - 1) {
          const g = grads[u];
          // collective (staged on a device: read back, ring all-reduce on the host, upload)
          this.pending.push(this.order.run(g.pull(), () => this.world.allReduce(g.host)).then(() => g.push()));
        }
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
