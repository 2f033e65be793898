// The real step of a worker: kernels -> model -> data-parallel plan (DDP / FSDP / ZeRO-2 / HSDP,
// actors/parallel/) -> dataloader actor (its own thread, prefetching) -> Trainer. The comm actor
// is the mesh's transport thread (mesh/Comm), opened before rendezvous so its address goes in
// the table. One runStep = one optimizer step over this rank's micro-batches.
import { cpus } from "node:os";
import { createKernels, type Kernels, type Tensor } from "../kernels/index.ts";
import { DataLoaderWorker, type LoaderState } from "../data/index.ts";
import type { Checkpointable } from "../checkpoint/index.ts";
import { CheckpointActor } from "./checkpoint_actor.ts";
import { Comm, deviceMesh, type CommGroup } from "../mesh/index.ts";
import type { Config } from "../configs/index.ts";
import { Trainer, SINGLE_PROCESS, type OptimizerShards, type StepCollectives } from "./trainer.ts";
import { buildModel, cpuPeakFlops, microBatchFlops } from "./local.ts";
import { Ddp } from "./parallel/ddp.ts";
import { Fsdp } from "./parallel/fsdp.ts";
import { peakRssMb, type RunnerFactory, type StepRunner, type WorkerContext } from "./runner.ts";

/** The parallel plan of one rank: collectives for the Trainer, optional optimizer shards. */
export interface DpPlan {
  /** FSDP: per unit, this rank's shard start and param shard; null for whole units (single, DDP). */
  shardOf(u: number): { start: number; param: Float32Array } | null;
  /** HSDP: replicas other than the first hold copies of the shards and save none of them. */
  savesShards: boolean;
  /** per unit: the params this rank owns uniquely (null on replicas) and their offset in the unit. */
  owned(u: number): { start: number; values: Float32Array } | null;
  collectives: StepCollectives;
  shards?: OptimizerShards;
  beginStep(nMicro: number): void;
  /** bytes of model state this rank holds (FSDP: shards + gathered slots), for benchmarks. */
  stateBytes(): number;
  /** Sync point before reading owned(): a device backend copies params to their host mirrors. */
  stageOwned(): Promise<void>;
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

/** Refuse what this runner does not do yet, naming the field. */
function checkSupported(c: Config): void {
  const t = c.train;
  const unsupported: Array<[string, number]> = [
    ["train.tensor_parallel_size", t.tensor_parallel_size],
    ["train.ulysses_parallel_size", t.ulysses_parallel_size],
    ["train.pipeline_parallel_size", t.pipeline_parallel_size],
    ["train.context_parallel_size", t.context_parallel_size],
    ["train.expert_parallel_size", t.expert_parallel_size],
  ];
  for (const [k, v] of unsupported) if (v !== 1) throw new Error(`${k} = ${v}: the worker's train runner does data parallelism only (ddp, fsdp1/fsdp2, hsdp); expected 1`);
}

export async function makePlan(k: Kernels, model: ReturnType<typeof buildModel>, config: Config, rank: number, world: number, comm: Comm | null): Promise<DpPlan> {
  const full = () => 4 * model.layout.totalNumel * 4; // params + grads + AdamW m, v
  const params = hostViews(k, model.params);
  const whole = (u: number) => ({ start: 0, values: params.host[u] });
  const wholeUnits = { shardOf: () => null, savesShards: true, stageOwned: () => params.pull() };
  if (world === 1 || !comm) return { collectives: SINGLE_PROCESS, beginStep: () => {}, stateBytes: full, owned: whole, ...wholeUnits };
  if (k.backend !== "cpu") throw new Error(`kernels.backend = ${k.backend} with launch.world_size = ${world}: multi-rank training moves host buffers through the mesh; expected kernels.backend cpu (or world_size 1)`);
  const t = config.train;
  const rep = t.data_parallel_replicate_size;
  const mesh = deviceMesh({ dp_replicate: rep, dp_shard: world / rep }, world);
  // groups are created in the same order on every rank
  const worldGroup = await comm.world();
  if (t.data_parallel_mode === "ddp") {
    const ddp = new Ddp(model, worldGroup);
    return { collectives: ddp, beginStep: (n) => ddp.beginStep(n), stateBytes: full, owned: (u) => (rank === 0 ? whole(u) : null), ...wholeUnits };
  }
  if (t.data_parallel_mode === "fsdp2-vescale") throw new Error("train.data_parallel_mode fsdp2-vescale is not supported; use ddp, fsdp1 or fsdp2");
  const shardRanks = mesh.groupOf(rank, ["dp_shard"]);
  const shard: CommGroup = shardRanks.length === world ? worldGroup : await comm.group(shardRanks, mesh.groupName(rank, ["dp_shard"]));
  const replicate = rep > 1 ? await comm.group(mesh.groupOf(rank, ["dp_replicate"]), mesh.groupName(rank, ["dp_replicate"])) : null;
  const fsdp = new Fsdp(k, model, shard, replicate, worldGroup, { fullShard: t.enable_full_shard, prefetch: t.enable_forward_prefetch });
  const primary = !replicate || replicate.rank === 0;
  const owned = (u: number) => {
    if (!primary) return null;
    const s = fsdp.shardsOf(u);
    const N = model.layout.units[u].numel;
    return { start: s.start, values: s.param.subarray(0, Math.max(0, Math.min(s.numel, N - s.start))) };
  };
  const shardOf = (u: number) => ({ start: fsdp.shardsOf(u).start, param: fsdp.shardsOf(u).param });
  return { collectives: fsdp, shards: fsdp, beginStep: () => fsdp.beginStep(), stateBytes: () => fsdp.stateBytes(), owned, shardOf, savesShards: primary, stageOwned: async () => {} };
}

export function makeTrainRunner(): RunnerFactory {
  let comm: Comm | null = null;
  return {
    async listen(rank, host, portRange) {
      comm = await Comm.listen({ rank, host, portRange: portRange[0] || portRange[1] ? portRange : undefined });
      return comm.address;
    },
    async build(ctx: WorkerContext): Promise<StepRunner> {
      const { config, rank, worldSize: world, logger } = ctx;
      checkSupported(config);
      if (world > 1) {
        // comm actor: authenticated TCP rings to every peer (HMAC on job, epoch, secret)
        await comm!.start({ worldSize: world, table: ctx.peers.map((p) => p.addr), secret: ctx.secret, jobId: ctx.job, epoch: ctx.epoch, deadlineMs: config.launch.collective_timeout_s * 1000 });
      }
      const threads = config.kernels.threads || ctx.threads || Math.max(1, Math.floor(cpus().length / world));
      const k = await createKernels({ backend: config.kernels.backend, threads });
      const model = buildModel(k, config);
      const plan = await makePlan(k, model, config, rank, world, world > 1 ? comm : null);
      yieldBetweenUnits(model);
      const t = config.train;
      const dataCfg = t.max_steps != null ? { ...config, train: { ...t, num_train_epochs: Number.MAX_SAFE_INTEGER } } : config;
      // dataloader actor: its own thread, prefetching whole steps of this rank's share
      const loader = await DataLoaderWorker.start(dataCfg, {
        dpRank: rank, dpSize: world, vocabSize: model.config.V, tokenizerPath: config.model.tokenizer_path ?? config.model.model_path ?? null, log: logger,
      }, { prefetch: Math.max(1, config.data.prefetch_factor) });
      const totalSteps = t.max_steps ?? loader.info.trainSteps;
      const trainer = new Trainer(model, {
        schedule: { lr: t.lr, lr_min: t.lr_min, lr_start: t.lr_start, train_steps: totalSteps, lr_warmup_ratio: t.lr_warmup_ratio, lr_decay_style: t.lr_decay_style, lr_decay_ratio: t.lr_decay_ratio },
        weightDecay: t.weight_decay, maxGradNorm: t.max_grad_norm, collectives: plan.collectives, shards: plan.shards,
      });
      const peak = k.backend === "cpu" ? cpuPeakFlops(threads) : 0;
      // checkpoint actor over this rank's buffers (whole units, or FSDP shards), AdamW step and data position
      // (webgpu: host mirrors, read at the save's sync point in extraState, uploaded in restore)
      const hp = hostViews(k, model.params), hm = hostViews(k, trainer.m), hv = hostViews(k, trainer.v);
      const state: Checkpointable = {
        units: () => (plan.savesShards ? model.layout.units.map((lu) => {
          const sh = plan.shardOf(lu.index);
          return { params: lu.params, start: sh?.start ?? 0, model: sh?.param ?? hp.host[lu.index], expAvg: hm.host[lu.index], expAvgSq: hv.host[lu.index] };
        }) : []),
        extraState: async () => {
          await hp.pull(); // sync point of a save: device buffers -> host mirrors (no-op on cpu)
          await hm.pull();
          await hv.pull();
          return { optimizerSteps: trainer.optimizerSteps, loader: await loader.state() };
        },
        restore: async (all) => {
          hp.push();
          hm.push();
          hv.push();
          const ex = all as { optimizerSteps: number; loader: LoaderState }[];
          trainer.optimizerSteps = ex[0].optimizerSteps;
          await loader.restore(ex.map((e) => e.loader));
        },
      };
      const ckpt = config.train.output_dir
        ? new CheckpointActor({ outputDir: config.train.output_dir, rank, worldSize: world, replicated: plan.shardOf(0) === null, epoch: ctx.epoch }, state)
        : null;
      const startStep = ctx.resumeFrom && ckpt ? await ckpt.load(ctx.resumeFrom) : 0;
      if (ctx.resumeFrom) logger.info({ dir: ctx.resumeFrom, step: startStep }, "resumed from checkpoint");
      logger.info({ rank, world, mode: t.data_parallel_mode, threads, params: model.layout.totalNumel, state_mb: Math.round(plan.stateBytes() / 2 ** 20), steps: totalSteps }, "train runner ready");
      return {
        totalSteps,
        startStep,
        checkpoint: ckpt ? (done: number) => ckpt.save(done) : undefined,
        model,
        trainer,
        plan,
        async runStep(step) {
          const batch = await loader.nextStep(); // from the dataloader thread's prefetch queue
          if (!batch) throw new Error(`rank ${rank}: data exhausted at step ${step} of ${totalSteps}`);
          const t0 = performance.now();
          plan.beginStep(batch.microBatches.length);
          const m = await trainer.step(step, batch.microBatches);
          const stepTimeS = (performance.now() - t0) / 1000;
          return {
            ...(step === totalSteps - 1 ? { paramStats: (await plan.stageOwned(), paramStats(plan, model.layout.units.length)) } : {}),
            lossSum: m.local.lossSum, validTokens: m.local.validTokens, tokens: m.local.tokens, gradNorm: m.grad_norm, lr: m.lr, stepTimeS,
            peakRssMb: peakRssMb(), rssMb: process.memoryUsage().rss / 2 ** 20, stateMb: plan.stateBytes() / 2 ** 20, flops: batch.microBatches.reduce((a, mb) => a + microBatchFlops(model, mb), 0), peakFlops: peak,
          };
        },
        async close() {
          await ckpt?.close().catch(() => {});
          await loader.close().catch(() => {});
          await comm?.close();
        },
      } as StepRunner & { model: unknown; trainer: unknown; plan: DpPlan };
    },
  };
}

/** Per unit [sum, sum of squares, index-weighted sum] over the params this rank owns uniquely. */
function paramStats(plan: DpPlan, nUnits: number): number[] {
  const out: number[] = [];
  for (let u = 0; u < nUnits; u++) {
    const o = plan.owned(u);
    let s = 0, sq = 0, w = 0;
    if (o) {
      for (let j = 0; j < o.values.length; j++) {
        const x = o.values[j];
        s += x;
        sq += x * x;
        w += x * (((o.start + j) % 7) + 1);
      }
    }
    out.push(s, sq, w);
  }
  return out;
}

/**
 * Heartbeats, NATS and the stop command run on this thread's event loop, which CPU kernels hold
 * for as long as they compute. Yield one macrotask after each unit's forward and backward so the
 * longest stretch without heartbeats is one unit's compute, not a whole step (a world-size-1 or
 * DDP step otherwise has no await that reaches the event loop). Costs microseconds per unit.
 */
function yieldBetweenUnits(model: ReturnType<typeof buildModel>): void {
  const h = model.hooks;
  const tick = () => new Promise<void>((r) => setImmediate(r));
  model.hooks = {
    ...h,
    afterUnitForward: async (u) => {
      await h.afterUnitForward?.(u);
      await tick();
    },
    afterUnitBackward: async (u) => {
      await h.afterUnitBackward?.(u);
      await tick();
    },
  };
}
