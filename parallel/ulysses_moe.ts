// Ulysses' share of the MoE load-balancing loss: every rank of a Ulysses group routes its own
// slice of the same packed row, so the row's router statistics (per-expert route counts and
// probability sums, token and valid-token counts: (2E+2) numbers) are summed over the group
// before aux is formed (models/blocks/router.ts RouterStats). All-gather in f64 and sum in rank
// order: every member gets the same bits, and no precision is lost to an f32 wire.
import type { CommGroup } from "../mesh/index.ts";
import type { RouterStatsReduce } from "../models/index.ts";
import { PostOrder } from "./staging.ts";

/** `order`: the rank's one PostOrder (staging.ts): on a device backend the group's other
 *  collectives may still wait there for a readback, and this one must come after them. */
export function ulyssesRouterReduce(group: CommGroup, order = new PostOrder()): RouterStatsReduce {
  let all = new Float64Array(new SharedArrayBuffer(0)); // (P, n) gathered statistics, shared memory (the transport writes it)
  return {
    size: group.size,
    async sum(v: Float64Array): Promise<void> {
      const n = v.length, P = group.size;
      if (all.length !== P * n) all = new Float64Array(new SharedArrayBuffer(8 * P * n));
      const mine = all.subarray(group.rank * n, (group.rank + 1) * n);
      mine.set(v);
      await order.run(null, () => group.allGather(all, mine));
      v.fill(0);
      for (let r = 0; r < P; r++) for (let i = 0; i < n; i++) v[i] += all[r * n + i];
    },
  };
}
