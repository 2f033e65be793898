// FSDP (ZeRO-3; ZeRO-2 with enable_full_shard = false; HSDP with a replicate group), applied to
// the model from outside through its per-unit hooks. Each unit's flat parameter buffer (N_u
// elements) is padded to Np_u = n_u * S and sharded evenly over the S ranks of the shard group:
// this rank keeps only its shard [i*n_u, (i+1)*n_u) of params, grads and AdamW state.
//   forward  unit u: all-gather u into a pooled buffer (prefetching u+1 meanwhile), compute,
//                    free it (ZeRO-3) or keep it until the step ends (ZeRO-2).
//   backward unit u: all-gather again (ZeRO-3), compute into a pooled full-size grad buffer,
//                    reduce-scatter it into the shard as soon as the unit's backward ends.
//   syncGrads:       wait for the reduce-scatters; HSDP then all-reduces shards over replicas.
// Tied lm_head: the head (unit H) reads unit 0's params and writes its gradient into unit 0's
// grads during the head's forward, so unit 0 stays gathered until the head is done and its
// grad buffer lives from the head's forward until unit 0's backward.
// On a device backend (WebGPU) shards and gather slots have host mirrors (staging.ts): a gather
// reads the param shard back once per step (the optimizer changed it on the device), all-gathers
// on the host and uploads the full unit; a backward's full grad is read back and reduce-scattered
// into the shard's mirror, accumulated there and uploaded once at syncGrads.
// Per-unit groups (FsdpOptions.groupOf): a unit a plan owns (an expert-parallel rank's experts)
// is sharded, gathered and reduce-scattered over its own group (ep_fsdp) instead of the shard
// group (docs/plans.md section 4). The squared grad norm still sums over the shard group: the
// expert shards of its ranks tile every expert once, so the one norm covers both kinds.
import type { Kernels, Tensor } from "../kernels/index.ts";
import { fillUnitRange, modelSource, type DecoderLM, type WeightSource } from "../models/index.ts";
import { sharedF32, type CommGroup } from "../mesh/index.ts";
import type { OptimizerShards, StepCollectives } from "./collectives.ts";
import { Mirror, PostOrder } from "./staging.ts";

type F32 = Tensor<"f32">;

export interface FsdpOptions {
  /** train.enable_full_shard: free gathered params after each use (ZeRO-3) or keep them for the step (ZeRO-2). */
  fullShard: boolean;
  /** train.enable_forward_prefetch: start the next unit's all-gather before computing this one. */
  prefetch: boolean;
  /** Where the shards' first values come from (a meta model: ranged reads or the seeded init);
   *  absent: the model's own full params, which are freed once sharded. */
  source?: WeightSource;
  /** The group unit u is sharded over, when not the shard group (experts: ep_fsdp). */
  groupOf?: (u: number) => CommGroup | null;
}

interface Unit {
  group: CommGroup; // the ranks sharing this unit's shards (the shard group, or the unit's own)
  N: number; // real elements
  n: number; // shard elements (padded)
  start: number; // i * n
  param: Mirror; // (n) this rank's shard
  grad: Mirror; // (n) reduce-scattered gradient, accumulated over micro-batches (on the host)
  rsOut: Float32Array | null; // (n) a later micro-batch's reduce-scatter output (allocated on first need)
  stale: boolean; // device: the optimizer changed the shard since its mirror was pulled
  rsCount: number; // reduce-scatters posted this step (the first one writes `grad` directly)
  pslot: number; // pool slot holding the gathered params, -1 if none
  gslot: number; // pool slot holding the full grad, -1 if none
  gather: Promise<void> | null;
}

export class Fsdp implements StepCollectives, OptimizerShards {
  private units: Unit[];
  // Gather buffers pooled by padded size (layers share one size; embeddings and head their own).
  private pool: Mirror[] = [];
  private order = new PostOrder(); // the shard group's staged collectives, in hook order
  private free = new Map<number, number[]>();
  private views = new Map<string, F32>();
  private pendingRs: Promise<void>[] = [];
  private afterSync = false;
  private readonly H: number;
  private readonly tied: boolean;
  /** The unit computed after u in forward / backward order (prefetch targets; VL vision units
   *  run before unit 0 in forward and after it in backward, see model.backwardUnits). */
  private readonly fwdNext = new Map<number, number>();
  private readonly bwdNext = new Map<number, number>();

  constructor(
    private k: Kernels,
    private model: DecoderLM,
    private shard: CommGroup,
    private replicate: CommGroup | null,
    private world: CommGroup,
    private o: FsdpOptions,
  ) {
    this.H = model.headUnit;
    this.tied = model.layout.units[this.H].reads.includes(0);
    const fwd = model.forwardUnits;
    const bwd = model.backwardUnits;
    fwd.forEach((u, i) => i + 1 < fwd.length && this.fwdNext.set(u, fwd[i + 1]));
    bwd.forEach((u, i) => i + 1 < bwd.length && this.bwdNext.set(u, bwd[i + 1]));
    const source = o.source ?? modelSource(model);
    this.units = model.layout.units.map((lu) => {
      const group = o.groupOf?.(lu.index) ?? shard;
      const n = Math.ceil(lu.numel / group.size);
      const u: Unit = {
        group, N: lu.numel, n, start: group.rank * n,
        param: new Mirror(k, k.alloc([n], "f32", { name: `${lu.name}.param_shard` }), "fsdp"),
        grad: new Mirror(k, k.alloc([n], "f32", { name: `${lu.name}.grad_shard` }), "fsdp"),
        rsOut: null, rsCount: 0, stale: false,
        pslot: -1, gslot: -1, gather: null,
      };
      // only this rank's shard is ever built (padding past the unit's end is zero); a full
      // buffer given with the model is freed
      fillUnitRange(lu, u.start, u.param.host, source);
      u.param.push();
      if (model.params[lu.index]) k.free(model.params[lu.index]);
      return u;
    });
    // the model's grads array: pool views are swapped in per unit (the Trainer only zeroes them)
    // (one buffer per size class: acquired and released in turn)
    model.grads = this.units.map((x, u) => {
      const sl = this.acquire(u);
      this.release(sl);
      return k.view(this.pool[sl].t, 0, [x.N]);
    });
    model.addHooks({
      beforeUnitForward: (u) => this.beforeForward(u),
      afterUnitForward: (u) => this.afterForward(u),
      beforeUnitBackward: (u) => this.beforeBackward(u),
      afterUnitBackward: (u) => this.afterBackward(u),
    });
  }

  // ---------------------------------------------------------------- OptimizerShards
  slice(u: number): { start: number; param: F32; grad: F32 } {
    const x = this.units[u];
    return { start: x.start, param: x.param.t, grad: x.grad.t };
  }

  /** This rank's shards (for checkpoints): start offset and host arrays per unit. */
  shardsOf(u: number): { start: number; numel: number; param: Float32Array; grad: Float32Array } {
    const x = this.units[u];
    return { start: x.start, numel: x.n, param: x.param.host, grad: x.grad.host };
  }

  /** SYNC POINT (device): param shards -> their host mirrors (shardsOf), for a save or the stats. */
  async pullShards(): Promise<void> {
    for (const u of this.units) await u.param.pull();
  }

  /** After a checkpoint load wrote the shards' host arrays: upload them (device). */
  pushShards(): void {
    for (const u of this.units) u.param.push();
  }

  /** Call before Trainer.step: zero the accumulated gradient shards. */
  beginStep(): void {
    for (const u of this.units) {
      u.rsCount = 0;
      u.stale = u.param.staged; // the last step's optimizer wrote the device shard
    }
    this.afterSync = false;
  }

  // ---------------------------------------------------------------- StepCollectives
  async allReduceSum(x: number): Promise<number> {
    // The Trainer's first reduction after syncGrads is the squared norm of the grad shards:
    // summed over the shard group only (replicas hold the same shards). Others: whole world.
    const g = this.afterSync ? this.shard : this.world;
    this.afterSync = false;
    const b = sharedF32(1);
    b[0] = x;
    await g.allReduce(b); // collective: scalar sum
    return b[0];
  }

  async syncGrads(): Promise<void> {
    await Promise.all(this.pendingRs.splice(0)); // collective: the per-unit reduce-scatters
    if (this.replicate && this.replicate.size > 1) {
      await Promise.all(this.units.map((u) => this.replicate!.allReduce(u.grad.host))); // collective: HSDP replicas
    }
    for (const u of this.units) u.grad.push(); // device: the summed shards, before the optimizer's kernels
    for (const u of this.units) if (u.pslot >= 0) this.releaseParams(u); // ZeRO-2 kept them for the step
    this.afterSync = true;
  }

  // ---------------------------------------------------------------- hooks
  // Every collective is POSTED synchronously at hook entry, so all ranks post in the same order.
  private async beforeForward(u: number): Promise<void> {
    this.gatherParams(u);
    if (u === this.H && this.tied) this.gatherParams(0);
    if (u === this.H) {
      this.acquireGrad(u); // the head writes lm_head / norm grads from its forward on
      if (this.tied) this.acquireGrad(0);
    }
    const next = this.fwdNext.get(u);
    if (this.o.prefetch && next !== undefined) this.gatherParams(next);
    await this.units[u].gather; // wait on peers: this unit's all-gather
    if (u === this.H && this.tied) await this.units[0].gather;
  }

  private afterForward(u: number): void {
    if (!this.o.fullShard) return;
    if (u === 0 && this.tied) return; // the head still reads it
    if (u === this.H) return; // its backward comes next
    this.releaseParams(this.units[u]);
    if (u === this.H && this.tied) this.releaseParams(this.units[0]);
  }

  private async beforeBackward(u: number): Promise<void> {
    // unit 0's backward (embedding) reads no params; the head and layers do
    if (u !== 0) this.gatherParams(u);
    if (u !== this.H) this.acquireGrad(u);
    const next = this.bwdNext.get(u);
    if (this.o.prefetch && next !== undefined && next !== 0) this.gatherParams(next); // unit 0's backward reads no params
    if (u !== 0) await this.units[u].gather; // wait on peers
  }

  private afterBackward(u: number): void {
    const x = this.units[u];
    const full = this.fullView(x.gslot, u);
    const slot = x.gslot;
    x.gslot = -1;
    // the step's first micro-batch writes the shard directly; later ones accumulate into it
    const first = x.rsCount++ === 0;
    if (!first) x.rsOut ??= sharedF32(x.n);
    const out = first ? x.grad.host : x.rsOut!;
    // collective, runs while the next unit computes (device: after the full grad is read back)
    const rs = this.order.run(this.pool[slot].pull(), () => x.group.reduceScatter(out, full));
    this.pendingRs.push(
      rs.then(() => {
        if (!first) {
          const g = x.grad.host, r = x.rsOut!;
          for (let j = 0; j < g.length; j++) g[j] += r[j];
        }
        this.release(slot);
      }),
    );
    if (this.o.fullShard) {
      if (u !== 0) this.releaseParams(x);
      if (u === this.H && this.tied) this.releaseParams(this.units[0]);
    }
  }

  // ---------------------------------------------------------------- buffers
  private gatherParams(u: number): void {
    const x = this.units[u];
    if (x.pslot >= 0) return; // already gathered or in flight
    x.pslot = this.acquire(u);
    const slot = this.pool[x.pslot];
    const full = this.fullView(x.pslot, u);
    const ready = x.stale ? x.param.pull() : null; // device: once per step, after the optimizer
    x.stale = false;
    x.gather = this.order.run(ready, () => x.group.allGather(full, x.param.host)).then(() => slot.push());
    this.model.params[u] = this.modelView(x.pslot, u);
  }

  private releaseParams(x: Unit): void {
    if (x.pslot < 0) return;
    this.release(x.pslot);
    x.pslot = -1;
    x.gather = null;
  }

  private acquireGrad(u: number): void {
    const x = this.units[u];
    if (x.gslot >= 0) return;
    x.gslot = this.acquire(u);
    this.k.zero(this.pool[x.gslot].t); // padding included: the reduce-scatter sends it
    this.model.grads![u] = this.modelView(x.gslot, u);
  }

  /** A free buffer of unit u's padded size (allocated on first need; none after the first step). */
  private acquire(u: number): number {
    const np = this.units[u].n * this.units[u].group.size;
    const s = this.free.get(np)?.pop();
    if (s !== undefined) return s;
    this.pool.push(new Mirror(this.k, this.k.alloc([np], "f32", { name: `fsdp.slot${this.pool.length}` }), "fsdp"));
    return this.pool.length - 1;
  }

  private release(slot: number): void {
    const np = this.pool[slot].t.numel;
    let l = this.free.get(np);
    if (!l) this.free.set(np, (l = []));
    l.push(slot);
  }

  /** (Np_u) host view of a slot: what the collectives move. */
  private fullView(s: number, u: number): Float32Array {
    return this.pool[s].host.subarray(0, this.units[u].n * this.units[u].group.size);
  }

  /** (N_u) tensor view of a slot for the model, cached so the model's own view cache hits. */
  private modelView(s: number, u: number): F32 {
    const key = `${s}:${u}`;
    let v = this.views.get(key);
    if (!v) this.views.set(key, (v = this.k.view(this.pool[s].t, 0, [this.units[u].N])));
    return v;
  }

  /** Bytes this rank holds for the model: shards (param, grad, AdamW m+v, rs outputs) + gather buffers. */
  stateBytes(): number {
    const shards = this.units.reduce((a, u) => a + u.n * 4 + (u.rsOut ? u.n : 0), 0);
    return 4 * (shards + this.pool.reduce((a, p) => a + p.t.numel, 0));
  }
}
