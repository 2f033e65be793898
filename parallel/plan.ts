// The plan builder: config sizes -> one device mesh -> process groups -> each plan applied to the
// model from outside, in a fixed order (as torchtitan's parallelize_*: inner plans first, data
// parallelism last, because FSDP shards whatever the earlier plans left as the model's units):
//   1. mesh    [pp, dp_replicate, dp_shard, ulysses, tp] from every configured size; a bad
//              factorisation is refused with every factor named (mesh/dims.ts).
//   2. Ulysses sequence parallel over `ulysses`            (extension point: TP over `tp` here)
//   3. expert parallel over the expert mesh [ep_fsdp, ep] (train.expert_parallel_size) of each
//      FSDP shard group (dp_shard x ulysses; one per HSDP replica): each ep rank keeps E/ep experts
//      of every sparse layer, whose units step 4 shards over ep_fsdp (and all-reduces over the
//      replicas, whose members hold the same experts and shards)
//   4. data parallel: DDP over every rank, or FSDP over dp_shard x ulysses (VeOmni's dp_shard_sp)
//      with HSDP replicas over dp_replicate.
// Plans never replace one another: unit hooks stack (DecoderLM.addHooks). docs/plans.md says how
// a new plan gets its groups, hooks units, owns parameters and shows shards to the optimizer and
// the checkpoint.
import type { Kernels, Tensor } from "../kernels/index.ts";
import { parallelRefusals, type Config } from "../configs/index.ts";
import type { MicroBatch } from "../data/index.ts";
import { deviceMesh, expertMesh, type Comm, type CommGroup, type Mesh, type TrainAxis } from "../mesh/index.ts";
import { materialize, type DecoderLM, type WeightSource } from "../models/index.ts";
import { SINGLE_PROCESS, type OptimizerShards, type StepCollectives } from "./collectives.ts";
import { Ddp } from "./ddp.ts";
import { ExpertParallel, expertParallelSizes } from "./expert.ts";
import { MixedParams } from "./mixed_precision.ts";
import { Fsdp } from "./fsdp.ts";
import { UlyssesAttention, ulyssesHeads } from "./ulysses.ts";
import { ulyssesSlice } from "./ulysses_data.ts";
import { ulyssesRouterReduce } from "./ulysses_moe.ts";
import { PostOrder } from "./staging.ts";

/** Sizes of the training mesh's axes (all of them; 1 = not split). */
export type ParallelSizes = Record<TrainAxis, number>;

/** One rank's view of every plan applied to its model: what the runner, Trainer and checkpoint use. */
export interface Parallelism {
  mesh: Mesh<TrainAxis>;
  rank: number;
  /** The data loader's rank and size: this rank's data-parallel coordinate over [dp_replicate,
   *  dp_shard]. Ranks that differ only along ulysses (or tp) read the same samples. */
  dataRank: number;
  dataSize: number;
  collectives: StepCollectives;
  /** ZeRO: the slice of each unit this rank's optimizer owns; absent = whole units. */
  shards?: OptimizerShards;
  /** The loader's micro-batches -> what this rank's model computes (Ulysses: its padded slice). */
  prepare(mbs: MicroBatch[]): MicroBatch[];
  /** Ulysses' core attention when ulysses > 1 (benchmarks read its all-to-all wait), else null. */
  ulysses: UlyssesAttention | null;
  /** The expert-parallel core when expert_parallel_size > 1 (benchmarks, tests), else null. */
  experts: ExpertParallel | null;
  beginStep(nMicro: number): void;
  /** FSDP: per unit, this rank's shard start and param shard; null for whole units (single, DDP). */
  shardOf(u: number): { start: number; param: Float32Array } | null;
  /** Whether this rank writes its units/shards to a checkpoint (HSDP replicas other than the first hold copies). */
  savesShards: boolean;
  /** Per unit: the params this rank owns uniquely (null where another rank owns them) and their
   *  offset in the unit's full (every-expert) layout, as runs: an expert-parallel rank's experts
   *  are two runs of their unit (gate/up block, down block). */
  owned(u: number): { start: number; values: Float32Array }[] | null;
  /** Bytes of model state this rank holds (FSDP: shards + gathered slots), for benchmarks. */
  stateBytes(): number;
  /** Sync point before reading owned() or shardOf(): a device backend copies params to their host mirrors. */
  stageOwned(): Promise<void>;
  /** After a checkpoint load wrote shardOf()'s host arrays: a device backend uploads them (cpu: nothing). */
  restoreShards(): void;
}

/** The mesh sizes a config asks for on `world` ranks; refuses what no plan implements yet, naming the field. */
export function parallelSizes(t: Config["train"], world: number): ParallelSizes {
  const refused = parallelRefusals(t); // the support table's list (configs/support.ts), the only one
  if (refused.length) throw new Error(refused.join("; "));
  const inner = t.ulysses_parallel_size * t.tensor_parallel_size * t.pipeline_parallel_size;
  const rep = t.data_parallel_replicate_size;
  const sizes: ParallelSizes = {
    pp: t.pipeline_parallel_size, dp_replicate: rep, dp_shard: Math.max(1, Math.floor(world / (inner * rep))),
    ulysses: t.ulysses_parallel_size, tp: t.tensor_parallel_size,
  };
  deviceMesh(sizes, world); // refuses a bad factorisation, every factor named
  const ep = t.expert_parallel_size;
  if (ep > 1) {
    const why = (what: string) => new Error(`train.expert_parallel_size(${ep}) with ${what}: not implemented yet; expected 1`);
    if (t.data_parallel_mode === "ddp") throw new Error(`train.expert_parallel_size(${ep}) needs train.data_parallel_mode fsdp1 or fsdp2 (experts are FSDP-sharded over ep_fsdp), got ddp`);
    if (t.ulysses_parallel_size > 1) throw why(`train.ulysses_parallel_size(${t.ulysses_parallel_size})`);
    expertParallelSizes(ep, sizes.dp_shard * sizes.ulysses, null, `launch.world_size(${world})`);
  }
  return sizes;
}

/**
 * Host arrays of tensors: on CPU the tensors' own `host` views (zero-copy, pull/push do nothing);
 * on a device backend (webgpu) host mirrors, filled by `pull` (k.read, a sync point) and
 * uploaded by `push` (after a checkpoint load wrote into them).
 */
export function hostViews(k: Kernels, ts: readonly Tensor<"f32">[]): { host: Float32Array[]; pull(): Promise<void>; push(): void } {
  const host = ts.map((t) => t.host ?? new Float32Array(t.numel));
  return {
    host,
    async pull() {
      for (let i = 0; i < ts.length; i++) if (!ts[i].host) host[i].set(await k.read(ts[i]));
    },
    push() {
      for (let i = 0; i < ts.length; i++) if (!ts[i].host) k.upload(ts[i], host[i]);
    },
  };
}

/** Process groups of one rank, by the mesh axes they span; created once each, in call order (the
 *  same on every rank: creating a group is collective). The group of every rank is "world". */
export class MeshGroups {
  private made = new Map<string, Promise<CommGroup>>();
  constructor(readonly mesh: Mesh<TrainAxis>, readonly rank: number, private comm: Comm) {}

  over(axes: readonly TrainAxis[]): Promise<CommGroup> {
    const ranks = this.mesh.groupOf(this.rank, axes);
    const name = ranks.length === this.mesh.worldSize ? "world" : this.mesh.groupName(this.rank, axes);
    let g = this.made.get(name);
    if (!g) this.made.set(name, (g = ranks.length === this.mesh.worldSize ? this.comm.world() : this.comm.group(ranks, name)));
    return g;
  }
}

export interface ParallelizeOptions {
  k: Kernels;
  model: DecoderLM;
  config: Config;
  rank: number;
  world: number;
  /** The started transport; null for one process. */
  comm: Comm | null;
  /** Given for a meta model (models/weights.ts): FSDP builds only this rank's shards from it, any
   *  other plan materializes the whole model from it first. Absent: the model holds full params. */
  source?: WeightSource;
}

/** Apply every configured plan to `model` (steps 1-4 above) and describe the result. */
export async function parallelize(o: ParallelizeOptions): Promise<Parallelism> {
  const { k, model, config, rank, world, comm } = o;
  const t = config.train;
  const sizes = parallelSizes(t, world);
  const mesh = deviceMesh(sizes, world);
  const at = mesh.coordsOf(rank);
  const base = {
    mesh, rank, dataRank: at.dp_replicate * sizes.dp_shard + at.dp_shard, dataSize: sizes.dp_replicate * sizes.dp_shard,
    prepare: (mbs: MicroBatch[]) => mbs, ulysses: null as UlyssesAttention | null, experts: null as ExpertParallel | null,
  };
  const ep = t.expert_parallel_size;
  if (ep > 1) {
    // refuse what expert parallelism cannot split before any group is made
    if (!model.config.moe) throw new Error(`train.expert_parallel_size(${ep}) with model ${model.config.modelType}: it has no routed experts; expected 1`);
    expertParallelSizes(ep, sizes.dp_shard * sizes.ulysses, model.config.moe.E, `launch.world_size(${world})`);
  }
  if (sizes.ulysses > 1) {
    // refuse what Ulysses cannot split before any group is made
    if (model.config.vision) throw new Error(`train.ulysses_parallel_size(${sizes.ulysses}) with model ${model.config.modelType}: sequence parallelism of vision-language models (M-RoPE, vision tower) is not implemented yet; expected 1`);
    if (model.config.mla) throw new Error(`train.ulysses_parallel_size(${sizes.ulysses}) with model ${model.config.modelType}: Ulysses over MLA attention is not implemented yet; expected 1`);
    ulyssesHeads(sizes.ulysses, model.config.NH, model.config.NKV);
  }
  const shardsParams = world > 1 && comm !== null && t.data_parallel_mode !== "ddp";
  if (o.source && !shardsParams) materialize(model, o.source); // whole units on every rank
  const full = () => 4 * model.layout.totalNumel * 4; // params + grads + AdamW m, v (+ mixed precision's compute copies below)
  const params = hostViews(k, model.params);
  const whole = (u: number) => [{ start: 0, values: params.host[u] }];
  const wholeUnits = { shardOf: () => null, savesShards: true, stageOwned: () => params.pull(), restoreShards: () => {} };
  // mixed precision on whole units (one process, DDP): each unit's bf16 compute copy is cast per
  // use and freed by FSDP's reshard rules (FSDP casts its shards before its bf16 all-gathers instead)
  const mixed = () => (k.bf16Params ? new MixedParams(k, k.bf16Params, model, t.enable_full_shard) : null);
  if (world === 1 || !comm) {
    const mp = mixed();
    return { ...base, collectives: mp ? mp.wrap(SINGLE_PROCESS) : SINGLE_PROCESS, beginStep: () => mp?.end(), stateBytes: () => full() + (mp?.bufferBytes ?? 0), owned: whole, ...wholeUnits };
  }
  const groups = new MeshGroups(mesh, rank, comm);
  // every plan's staged collectives (device backends) are posted in one program order: plans
  // share groups (at ulysses = world size, Ulysses' group is FSDP's shard group and "world")
  const order = new PostOrder();
  const worldGroup = await groups.over(["dp_replicate", "dp_shard", "ulysses"]);

  // 2. Ulysses: the model's declared site gets the sequence-parallel core; each rank keeps its
  //    slice of the rows its group reads (same data coordinate, so the same rows)
  if (sizes.ulysses > 1) {
    if (model.family.plan.ulyssesAround !== "attention") throw new Error(`model ${model.config.modelType}: its plan declares no Ulysses site (models/plan.ts ulyssesAround)`);
    const group = await groups.over(["ulysses"]);
    base.ulysses = new UlyssesAttention(k, model.config, group, { async: t.ulysses_async, maxTokens: model.opts.maxTokens }, order);
    model.setAttentionCore(base.ulysses);
    if (model.routerStats) model.routerStats.reduce = ulyssesRouterReduce(group, order); // MoE aux loss over the whole row
    base.prepare = (mbs) => mbs.map((mb) => ulyssesSlice(mb, group.size, group.rank));
  }

  // 3. expert parallel: ep rank j keeps experts [j*E/ep, (j+1)*E/ep) of every sparse layer (its
  //    experts units re-laid to that range) and the core that sends each expert its rows; step 4
  //    shards those units over ep_fsdp (the ranks holding the same experts). The expert mesh lays
  //    over this rank's FSDP shard group (the whole world without HSDP replicas): member i of it
  //    is expert-mesh rank i, so every replica places its experts the same way.
  let expertGroup: ((u: number) => CommGroup | null) | undefined;
  if (ep > 1) {
    const shardRanks = mesh.groupOf(rank, ["dp_shard", "ulysses"]);
    const em = expertMesh(ep, shardRanks.length), me = shardRanks.indexOf(rank);
    const over = (axis: "ep" | "ep_fsdp") => {
      const ranks = em.groupOf(me, [axis]).map((i) => shardRanks[i]);
      return comm.group(ranks, `${axis}@${ranks.join(".")}`);
    };
    const epGroup = await over("ep");
    const epFsdp = await over("ep_fsdp");
    base.experts = new ExpertParallel(k, model.config, epGroup, order);
    model.holdExperts(base.experts.first, base.experts.El);
    model.setExpertCore(base.experts);
    const xs = new Set(model.layout.expertUnits.filter((x) => x >= 0));
    expertGroup = (u) => (xs.has(u) ? epFsdp : null);
  }

  // 4. data parallel (last: it wraps the units the plans above left)
  if (t.data_parallel_mode === "ddp") {
    const ddp = new Ddp(k, model, worldGroup, order);
    const mp = mixed();
    return {
      ...base, collectives: mp ? mp.wrap(ddp) : ddp, beginStep: (n) => (mp?.end(), ddp.beginStep(n)), stateBytes: () => full() + (mp?.bufferBytes ?? 0),
      owned: (u) => (rank === 0 ? whole(u) : null), ...wholeUnits,
    };
  }
  const shard = await groups.over(["dp_shard", "ulysses"]);
  const replicate = sizes.dp_replicate > 1 ? await groups.over(["dp_replicate"]) : null;
  const fsdp = new Fsdp(k, model, shard, replicate, worldGroup, { fullShard: t.enable_full_shard, prefetch: t.enable_forward_prefetch, source: o.source, groupOf: expertGroup, order });
  const primary = !replicate || replicate.rank === 0;
  const owned = (u: number) => {
    if (!primary) return null;
    const s = fsdp.shardsOf(u);
    const lu = model.layout.units[u];
    const values = s.param.subarray(0, Math.max(0, Math.min(s.numel, lu.numel - s.start)));
    if (!lu.all) return [{ start: s.start, values }];
    // a held expert range: map each parameter's run to its offset in the every-expert unit
    const at = new Map(lu.all.map((p) => [p.name, p.offset]));
    return flatRuns(lu.params, s.start, values).map((r) => ({ start: at.get(r.name)! + r.from, values: r.values }));
  };
  const shardOf = (u: number) => ({ start: fsdp.shardsOf(u).start, param: fsdp.shardsOf(u).param });
  return {
    ...base, collectives: fsdp, shards: fsdp, beginStep: () => fsdp.beginStep(), stateBytes: () => fsdp.stateBytes(),
    owned, shardOf, savesShards: primary, stageOwned: () => fsdp.pullShards(), restoreShards: () => fsdp.pushShards(),
  };
}

/** The runs of each parameter inside a flat range [start, start + values.length) of its unit. */
function flatRuns(ps: readonly { name: string; offset: number; numel: number }[], start: number, values: Float32Array): { name: string; from: number; values: Float32Array }[] {
  const out = [];
  for (const p of ps) {
    const a = Math.max(start, p.offset), b = Math.min(start + values.length, p.offset + p.numel);
    if (a < b) out.push({ name: p.name, from: a - p.offset, values: values.subarray(a - start, b - start) });
  }
  return out;
}
