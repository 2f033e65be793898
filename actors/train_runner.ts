// The real step of a worker: buildTraining (actors/build.ts: kernels -> model -> parallel plans
// from the mesh, parallel/ -> dataloader actor -> Trainer), plus the checkpoint actor. The comm
// actor is the mesh's transport thread (mesh/Comm), opened before rendezvous so its address goes
// in the table. One runStep = one optimizer step over this rank's micro-batches.
import { cpus } from "node:os";
import type { LoaderState } from "../data/index.ts";
import type { Checkpointable } from "../checkpoint/index.ts";
import { CheckpointActor } from "./checkpoint_actor.ts";
import { Comm } from "../mesh/index.ts";
import type { DecoderLM } from "../models/index.ts";
import { hostViews, type Parallelism } from "../parallel/index.ts";
import { buildTraining, microBatchFlops } from "./build.ts";
import { Tracer } from "./trace.ts";
import { peakRssMb, type RunnerFactory, type StepRunner, type WorkerContext } from "./runner.ts";

export function makeTrainRunner(): RunnerFactory {
  let comm: Comm | null = null;
  return {
    async listen(rank, host, portRange, logger) {
      comm = await Comm.listen({ rank, host, portRange: portRange[0] || portRange[1] ? portRange : undefined, logger });
      return comm.address;
    },
    async build(ctx: WorkerContext): Promise<StepRunner> {
      const { config, rank, worldSize: world, logger } = ctx;
      if (world > 1) {
        // comm actor: authenticated TCP rings to every peer (HMAC on job, epoch, secret)
        await comm!.start({ worldSize: world, table: ctx.peers.map((p) => p.addr), secret: ctx.secret, jobId: ctx.job, epoch: ctx.epoch, deadlineMs: config.launch.collective_timeout_s * 1000 });
      }
      const { k, threads, model, plan, loader, trainer, totalSteps, peakFlops: peak } = await buildTraining(config, {
        rank, world, comm: world > 1 ? comm : null, logger, threads: ctx.threads || Math.max(1, Math.floor(cpus().length / world)),
      });
      yieldBetweenUnits(model);
      const t = config.train;
      const tracer = t.enable_profiling ? traceRank(rank, t, model, world > 1 ? comm : null) : null;
      // checkpoint actor over this rank's buffers (whole units, or FSDP shards), AdamW step and data position
      // (webgpu: host mirrors, read at the save's sync point in extraState, uploaded in restore;
      // FSDP's shards are mirrored by the plan, and its model.params are gather slots)
      const sharded = plan.shardOf(0) !== null;
      const hp = hostViews(k, sharded ? [] : model.params), hm = hostViews(k, trainer.m), hv = hostViews(k, trainer.v);
      const state: Checkpointable = {
        units: () => (plan.savesShards ? model.layout.units.map((lu) => {
          const sh = plan.shardOf(lu.index);
          return { params: lu.params, allParams: lu.all, start: sh?.start ?? 0, model: sh?.param ?? hp.host[lu.index], expAvg: hm.host[lu.index], expAvgSq: hv.host[lu.index] };
        }) : []),
        extraState: async () => {
          await (sharded ? plan.stageOwned() : hp.pull()); // sync point of a save: device buffers -> host mirrors (no-op on cpu)
          await hm.pull();
          await hv.pull();
          return { optimizerSteps: trainer.optimizerSteps, loader: await loader.state() };
        },
        restore: async (all) => {
          if (sharded) plan.restoreShards();
          else hp.push();
          hm.push();
          hv.push();
          const ex = all as { optimizerSteps: number; loader: LoaderState }[];
          trainer.optimizerSteps = ex[0].optimizerSteps;
          await loader.restore(oneStatePerDataRank(ex.map((e) => e.loader)));
        },
      };
      const ckpt = config.train.output_dir
        ? new CheckpointActor({ outputDir: config.train.output_dir, rank, worldSize: world, replicated: plan.shardOf(0) === null }, state)
        : null;
      const startStep = ctx.resumeFrom && ckpt ? await ckpt.load(ctx.resumeFrom) : 0;
      if (ctx.resumeFrom) logger.info({ dir: ctx.resumeFrom, step: startStep }, "resumed from checkpoint");
      logger.info({ rank, world, mode: t.data_parallel_mode, threads, params: model.layout.totalNumel, state_mb: Math.round(plan.stateBytes() / 2 ** 20), steps: totalSteps }, "train runner ready");
      return {
        totalSteps,
        startStep,
        checkpoint: ckpt ? (done: number, epoch: number) => {
          const end = tracer?.begin("checkpoint", `stage checkpoint ${done}`);
          return ckpt.save(done, epoch).finally(end);
        } : undefined,
        model,
        trainer,
        plan,
        async runStep(step) {
          if (tracer) tracer.on = tracer.covers(step);
          const endData = tracer?.begin("data", "wait for the next batch");
          const batch = await loader.nextStep(); // from the dataloader thread's prefetch queue
          endData?.();
          if (!batch) throw new Error(dataEnded(rank, step, totalSteps, config));
          const t0 = performance.now();
          const mbs = plan.prepare(batch.microBatches);
          plan.beginStep(mbs.length);
          const m = await trainer.step(step, mbs);
          const stepTimeS = (performance.now() - t0) / 1000;
          if (tracer?.on) {
            tracer.span("compute", `step ${step + 1}`, t0, performance.now(), { micro_batches: mbs.length, tokens: m.local.tokens, loss: m.loss, ...(t.profile_profile_memory ? { rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20) } : {}) });
            if (step + 2 === tracer.endStep || step + 1 === totalSteps) logger.info({ file: tracer.write(), spans: tracer.spans }, "profile trace written");
          }
          return {
            ...(step === totalSteps - 1 ? { paramStats: (await plan.stageOwned(), paramStats(plan, model.layout.units.length)) } : {}),
            lossSum: m.local.lossSum, validTokens: m.local.validTokens, tokens: m.local.tokens, gradNorm: m.grad_norm, lr: m.lr, stepTimeS,
            ...(m.local.expertLoad ? { moe: { auxSum: m.local.auxSum ?? null, auxCoef: moeAuxCoef(model), expertLoad: m.local.expertLoad } } : {}),
            peakRssMb: peakRssMb(), rssMb: process.memoryUsage().rss / 2 ** 20, stateMb: plan.stateBytes() / 2 ** 20, flops: mbs.reduce((a, mb) => a + microBatchFlops(model, mb), 0), peakFlops: peak,
          };
        },
        async close() {
          // close everything, then report the first failure (a failed final checkpoint write must not vanish)
          const errors: string[] = [];
          await ckpt?.close().catch((e) => errors.push(`checkpoint writer: ${e instanceof Error ? e.message : String(e)}`));
          await loader.close().catch((e) => errors.push(`data loader: ${e instanceof Error ? e.message : String(e)}`));
          await comm?.close();
          if (errors.length) throw new Error(`rank ${rank}: closing failed: ${errors.join("; ")}`);
        },
      } as StepRunner & { model: unknown; trainer: unknown; plan: Parallelism };
    },
  };
}

/** A rank's data ended before the planned steps: with dyn_bsz and no max_steps the plan is
 *  VeOmni's estimate from data.train_size (tokens), which can exceed the data; say what to set. */
function dataEnded(rank: number, step: number, total: number, config: WorkerContext["config"]): string {
  const t = config.train, d = config.data;
  const why = t.dyn_bsz && t.max_steps == null && d.drop_last
    ? `: with train.dyn_bsz the ${total} steps are VeOmni's estimate from data.train_size ${d.train_size} tokens; set data.train_size to the data's token count, set train.max_steps (the data repeats), or set data.drop_last false (the steps are then counted from the data)`
    : "";
  return `rank ${rank}: data exhausted at step ${step} of ${total}${why}`;
}

/** The objective's coefficient of the aux loss: router_aux_loss_coef when output_router_logits. */
function moeAuxCoef(model: DecoderLM): number {
  const m = model.config.moe;
  return m && m.outputRouterLogits ? m.routerAuxLossCoef : 0;
}

/**
 * train.enable_profiling: a Tracer fed by the model's unit hooks (each unit's forward and backward)
 * and the comm actor's collectives. Spans are kept only while `tracer.on` (the profiled steps).
 */
function traceRank(rank: number, t: { profile_trace_dir: string; profile_start_step: number; profile_end_step: number }, model: DecoderLM, comm: Comm | null): Tracer {
  const tracer = new Tracer(rank, t.profile_trace_dir, t.profile_start_step, t.profile_end_step);
  const fwd = new Map<number, number>();
  const bwd = new Map<number, number>();
  model.addHooks({
    beforeUnitForward: (u) => void fwd.set(u, performance.now()),
    afterUnitForward: (u) => tracer.span("compute", `unit ${u} forward`, fwd.get(u)!, performance.now()),
    beforeUnitBackward: (u) => void bwd.set(u, performance.now()),
    afterUnitBackward: (u) => tracer.span("compute", `unit ${u} backward`, bwd.get(u)!, performance.now()),
  });
  if (comm) comm.onOp = (e) => tracer.span("comm", e.kind, e.t0, e.t1, { group: e.group, bytes: e.bytes });
  return tracer;
}

/** Per unit [sum, sum of squares, index-weighted sum] over the params this rank owns uniquely. */
export function paramStats(plan: Parallelism, nUnits: number): number[] {
  const out: number[] = [];
  for (let u = 0; u < nUnits; u++) {
    let s = 0, sq = 0, w = 0;
    for (const o of plan.owned(u) ?? []) {
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
function yieldBetweenUnits(model: DecoderLM): void {
  const tick = () => new Promise<void>((r) => setImmediate(r));
  model.addHooks({ afterUnitForward: tick, afterUnitBackward: tick });
}

/** A checkpoint holds one loader state per rank; ranks of one data-parallel coordinate (a Ulysses
 *  group) hold the same one. The loader restores from one per data rank, in data-rank order. */
function oneStatePerDataRank(states: LoaderState[]): LoaderState[] {
  const byRank = new Map<number, LoaderState>();
  for (const s of states) if (!byRank.has(s.dpRank)) byRank.set(s.dpRank, s);
  return [...byRank.keys()].sort((a, b) => a - b).map((r) => byRank.get(r)!);
}
