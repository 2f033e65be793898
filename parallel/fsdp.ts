// FSDP (ZeRO-3; ZeRO-2 with enable_full_shard = false; HSDP with a replicate group), applied to
// the model from outside through its per-unit hooks. Each unit's flat parameter buffer (N_u
// elements) is padded to Np_u = n_u * S and sharded evenly over the S ranks of the shard group:
// this rank keeps only its shard [i*n_u, (i+1)*n_u) of params, grads and AdamW state.
//   forward  unit u: all-gather u into a buffer (prefetching u+1 meanwhile), compute,
//                    free it (ZeRO-3) or keep it until the step ends (ZeRO-2).
//   backward unit u: all-gather again (ZeRO-3), compute into a full-size grad buffer,
//                    reduce-scatter it into the shard as soon as the unit's backward ends
//                    (the step's first reduce-scatter of a unit writes its shard; later ones
//                    reduce in place into the buffer's own segment and add it to the shard).
//                    A new full grad buffer is taken with at most one reduce-scatter in flight
//                    (none for the embedding's, the largest), so freed buffers serve it.
//   syncGrads:       wait for the reduce-scatters; HSDP then all-reduces shards over replicas.
// Buffers are ranges of a few large buffers (fsdp_buffers.ts), so memory freed by one unit serves
// the others: the peak is what is alive at once, not one buffer per size.
// Tied lm_head (issue 17's memory): the head (unit H) reads unit 0's params and writes the
// lm_head gradient during its forward. Unit 0 is gathered again for the head (freed after the
// embedding forward like any unit); on the cpu backends the head's cross-entropy writes its
// gradient IN PLACE of the gathered weight (crossEntropyFused with dweight = weight), which is
// reduce-scattered into unit 0's shard right after the head and freed: one embedding-sized
// buffer at a time. WebGPU's kernel has no in-place form: there the gradient takes a buffer of
// its own, reduce-scattered and freed at the same point with the gathered weight. The embedding
// backward then takes a fresh buffer, reduce-scattered as the unit's second contribution.
// On a device backend (WebGPU) shards and gather buffers have host mirrors (staging.ts): a gather
// reads the param shard back once per step (the optimizer changed it on the device), all-gathers
// on the host and uploads the full unit; a backward's full grad is read back and reduce-scattered
// into the shard's mirror, accumulated there and uploaded once at syncGrads.
// Per-unit groups (FsdpOptions.groupOf): a unit a plan owns (an expert-parallel rank's experts)
// is sharded, gathered and reduce-scattered over its own group (ep_fsdp) instead of the shard
// group (docs/plans.md section 4). The squared grad norm still sums over the shard group: the
// expert shards of its ranks tile every expert once, so the one norm covers both kinds.
// Mixed precision (kernels' Bf16Params; FSDP2 MixedPrecisionPolicy(param_dtype=bf16,
// reduce_dtype=f32)): each gather casts this rank's f32 shard to bf16 and all-gathers the bf16
// bits (half the bytes of an f32 gather), which become the unit's compute copy (f32 storage of the
// bf16 values; the bits stay alive for the GEMM where it reads them: oneDNN). Gradients,
// reduce-scatters, shards and AdamW stay f32. (cpu only: device backends have no Bf16Params.)
import type { Bf16Params, Kernels, Tensor } from "../kernels/index.ts";
import { fillUnitRange, modelSource, type DecoderLM, type WeightSource } from "../models/index.ts";
import { sharedF32, type CommGroup } from "../mesh/index.ts";
import type { OptimizerShards, StepCollectives } from "./collectives.ts";
import { FsdpBuffers, type Range } from "./fsdp_buffers.ts";
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
  /** The rank's one PostOrder (staging.ts), shared with the other plans' staged collectives. */
  order?: PostOrder;
}

interface Unit {
  index: number; // u
  group: CommGroup; // the ranks sharing this unit's shards (the shard group, or the unit's own)
  N: number; // real elements
  n: number; // shard elements (padded)
  start: number; // i * n
  param: Mirror; // (n) this rank's shard
  grad: Mirror; // (n) reduce-scattered gradient, accumulated over micro-batches and the tied head (on the host)
  stale: boolean; // device: the optimizer changed the shard since its mirror was pulled
  rsCount: number; // reduce-scatters posted this step (the first one writes `grad` directly)
  p: Range | null; // (Np) the gathered params, null if none
  bits: Uint16Array | null; // (Np) mixed precision: the gathered bf16 params while the GEMM reads them
  g: Range | null; // (Np) the full grad, null if none
  gather: Promise<void> | null;
}

export class Fsdp implements StepCollectives, OptimizerShards {
  private units: Unit[];
  private bufs: FsdpBuffers;
  private order: PostOrder; // the staged collectives, in hook order (shared with the other plans)
  // mixed precision: bf16 gather buffers (shared memory for the transport), pooled by padded size
  private free16 = new Map<number, Uint16Array[]>();
  private bytes16 = 0;
  private readonly bf16: Bf16Params | null;
  private pendingRs: Promise<void>[] = [];
  private afterSync = false;
  private readonly H: number;
  private readonly tied: boolean;
  /** The tied head's cross-entropy writes its gradient over the gathered embedding (cpu backends). */
  private readonly headInPlace: boolean;
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
    this.bf16 = k.bf16Params;
    this.order = o.order ?? new PostOrder();
    this.H = model.headUnit;
    this.tied = model.layout.units[this.H].reads.includes(0);
    this.headInPlace = k.backend === "cpu";
    const fwd = model.forwardUnits;
    const bwd = model.backwardUnits;
    fwd.forEach((u, i) => i + 1 < fwd.length && this.fwdNext.set(u, fwd[i + 1]));
    bwd.forEach((u, i) => i + 1 < bwd.length && this.bwdNext.set(u, bwd[i + 1]));
    const source = o.source ?? modelSource(model);
    this.units = model.layout.units.map((lu) => {
      const group = o.groupOf?.(lu.index) ?? shard;
      const n = Math.ceil(lu.numel / group.size);
      const u: Unit = {
        index: lu.index, group, N: lu.numel, n, start: group.rank * n,
        param: new Mirror(k, k.alloc([n], "f32", { name: `${lu.name}.param_shard` }), "fsdp"),
        grad: new Mirror(k, k.alloc([n], "f32", { name: `${lu.name}.grad_shard` }), "fsdp"),
        rsCount: 0, stale: false, p: null, bits: null, g: null, gather: null,
      };
      // only this rank's shard is ever built (padding past the unit's end is zero); a full
      // buffer given with the model is freed
      fillUnitRange(lu, u.start, u.param.host, source);
      u.param.push();
      if (model.params[lu.index]) k.free(model.params[lu.index]);
      return u;
    });
    this.bufs = new FsdpBuffers(k, Math.max(...this.units.map((x) => x.n * x.group.size)));
    k.lendScratch?.(this.bufs); // idle gather-buffer ranges serve the kernels' large scratch
    // the model's grads array: buffer views are swapped in per unit (the Trainer only zeroes them)
    model.grads = this.units.map((x, u) => {
      const r = this.bufs.acquire(x.n * x.group.size);
      this.bufs.release(r);
      return this.bufs.tensor(r, x.N, u);
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
    for (const u of this.units) this.releaseParams(u); // ZeRO-2 kept them for the step
    this.afterSync = true;
  }

  // ---------------------------------------------------------------- hooks
  // Every collective is POSTED synchronously at hook entry, so all ranks post in the same order.
  private async beforeForward(u: number): Promise<void> {
    this.gatherParams(u);
    if (u === this.H && this.tied) this.gatherParams(0);
    if (u === this.H) {
      this.acquireGrad(u); // the head writes lm_head / norm grads from its forward on
      if (this.tied && this.headInPlace) this.model.grads![0] = this.model.params[0]; // the gradient replaces the gathered weight
      else if (this.tied) this.acquireGrad(0);
    }
    const next = this.fwdNext.get(u);
    if (this.o.prefetch && next !== undefined) this.gatherParams(next);
    await this.units[u].gather; // wait on peers: this unit's all-gather
    if (u === this.H && this.tied) await this.units[0].gather;
  }

  private async afterForward(u: number): Promise<void> {
    if (u === this.H && this.tied) {
      // the head's lm_head gradient (in unit 0's gathered buffer, or a buffer of its own): reduce-
      // scatter it into the shard and free it and the gathered weight before the backward takes
      // buffers (collective, waited for here)
      const x = this.units[0];
      const r = this.headInPlace ? x.p! : x.g!;
      if (this.headInPlace) this.dropParams(x);
      else x.g = null;
      await this.reduceGrad(x, r, 0);
      this.releaseParams(x);
      return;
    }
    if (!this.o.fullShard) return;
    if (u === this.H) return; // its backward comes next
    this.releaseParams(this.units[u]);
  }

  private async beforeBackward(u: number): Promise<void> {
    // unit 0's backward (embedding) reads no params; the head and layers do
    if (u !== 0) this.gatherParams(u);
    // memory: at most one gradient reduce-scatter in flight when a new full grad is taken (the
    // embedding's, the largest buffer: none), so its buffer is free again (wait on peers; the
    // collectives were posted in order already)
    if (u !== this.H) {
      await Promise.all(u === 0 ? this.pendingRs : this.pendingRs.slice(0, -1));
      this.acquireGrad(u);
    }
    const next = this.bwdNext.get(u);
    if (this.o.prefetch && next !== undefined && next !== 0) this.gatherParams(next); // unit 0's backward reads no params
    if (u !== 0) await this.units[u].gather; // wait on peers
  }

  private afterBackward(u: number): void {
    const x = this.units[u];
    const r = x.g!;
    x.g = null;
    this.pendingRs.push(this.reduceGrad(x, r, u)); // collective, runs while the next unit computes
    if (this.o.fullShard && u !== 0) this.releaseParams(x);
  }

  /** Reduce-scatter unit u's full gradient in range r into its shard (the step's first one
   *  writes the shard; later ones reduce into r's own segment and add that), then free r.
   *  Device: posted once r's mirror is read back. */
  private reduceGrad(x: Unit, r: Range, u: number): Promise<void> {
    const full = this.bufs.host(r);
    const first = x.rsCount++ === 0;
    const out = first ? x.grad.host : full.subarray(x.start, x.start + x.n); // in place: the transport allows it
    return this.order.run(this.bufs.pull(r), () => x.group.reduceScatter(out, full)).then(() => {
      if (!first) {
        const g = x.grad.host;
        for (let j = 0; j < g.length; j++) g[j] += out[j];
      }
      this.bufs.release(r);
    }, (e) => {
      throw new Error(`fsdp: reduce-scatter of ${this.model.layout.units[u].name}'s gradient failed: ${(e as Error).message}`);
    });
  }

  // ---------------------------------------------------------------- buffers
  private gatherParams(u: number): void {
    const x = this.units[u];
    if (x.p) return; // already gathered or in flight
    const r = (x.p = this.bufs.acquire(x.n * x.group.size));
    const view = this.bufs.tensor(r, x.N, u);
    this.model.params[u] = view;
    const p = this.bf16;
    if (!p) {
      const full = this.bufs.host(r);
      const ready = x.stale ? x.param.pull() : null; // device: once per step, after the optimizer
      x.stale = false;
      x.gather = this.order.run(ready, () => x.group.allGather(full, x.param.host)).then(() => this.bufs.push(r));
      return;
    }
    // mixed (cpu): cast this rank's shard into its place in a bf16 buffer, gather the bf16 in place
    const bits = this.acquire16(x.n * x.group.size);
    const mine = bits.subarray(x.start, x.start + x.n);
    p.cast(mine, x.param.host);
    x.bits = bits;
    x.gather = this.order.run(null, () => x.group.allGather(bits, mine)).then(() => {
      if (x.bits !== bits) return; // released before it landed (never in a step: hooks await it)
      p.load(view, bits.subarray(0, x.N)); // the compute copy: f32 storage of the bf16 values
      if (!p.readsBits) {
        this.release16(bits);
        x.bits = null;
      }
    });
  }

  /** The gathered params are no longer params (freed, or become the tied head's gradient). */
  private dropParams(x: Unit): void {
    if (this.bf16 && x.p) this.bf16.release(this.bufs.tensor(x.p, x.N, x.index));
    if (x.bits) this.release16(x.bits);
    x.bits = null;
    x.p = null;
    x.gather = null;
  }

  private releaseParams(x: Unit): void {
    if (!x.p) return;
    const r = x.p;
    this.dropParams(x);
    this.bufs.release(r);
  }

  /** A free bf16 gather buffer of np elements (allocated on first need, shared memory). */
  private acquire16(np: number): Uint16Array {
    const b = this.free16.get(np)?.pop();
    if (b) return b;
    this.bytes16 += 2 * np;
    return new Uint16Array(new SharedArrayBuffer(2 * np));
  }

  private release16(b: Uint16Array): void {
    let l = this.free16.get(b.length);
    if (!l) this.free16.set(b.length, (l = []));
    l.push(b);
  }

  private acquireGrad(u: number): void {
    const x = this.units[u];
    if (x.g) return;
    x.g = this.bufs.acquire(x.n * x.group.size);
    this.k.zero(this.bufs.tensor(x.g, x.g.len, -1)); // padding included: the reduce-scatter sends it
    this.model.grads![u] = this.bufs.tensor(x.g, x.N, u);
  }

  /** Bytes this rank holds for the model: shards (param, grad, AdamW m+v) + gather and grad buffers (f32 and bf16). */
  stateBytes(): number {
    const shards = this.units.reduce((a, u) => a + u.n * 4, 0);
    return 4 * (shards + this.bufs.numel) + this.bytes16;
  }
}
