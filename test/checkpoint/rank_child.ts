// One data-parallel rank as a real process: mesh TCP ring (mesh/Comm), DDP (parallel/ddp.ts),
// the real Trainer and data loader, and its RankCheckpointer. JSON lines on stdout:
// {ev:"listening",address} -> reads {table} on stdin -> {ev:"resumed",step}? -> {ev:"loss",step,bits}
// per step, {ev:"saved",report} when a save is durable, {ev:"parked"} at PARK, {ev:"done"}.
// argv[2]: JSON {rank, world, mode: "ddp"|"fsdp", out, data, steps, save, epoch, resumeFrom, parkAt?}. With parkAt,
// rank `world-1` parks mid-step parkAt (after backward, before the gradient all-reduce completes),
// once its earlier saves are durable, and waits to be killed.
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Ddp, Fsdp } from "../../parallel/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import { type Checkpointable, RankCheckpointer, isSaveStep } from "../../checkpoint/index.ts";
import { createDataLoader, type LoaderState } from "../../data/index.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { Comm } from "../../mesh/index.ts";
import { createModel, initWeights } from "../../models/index.ts";
import { V, raw } from "./dp_local.ts";

const cfg = JSON.parse(process.argv[2]) as { rank: number; world: number; mode: "ddp" | "fsdp"; out: string; data: string; steps: number; save: number; epoch: number; resumeFrom: string | null; parkAt?: number };
const say = (o: object) => console.log(JSON.stringify({ rank: cfg.rank, ...o }));
try {
  const comm = await Comm.listen({ rank: cfg.rank, host: "127.0.0.1" });
  say({ ev: "listening", address: comm.address });
  const lines = createInterface({ input: process.stdin });
  const { table } = JSON.parse(await new Promise<string>((r) => lines.once("line", r)));
  await comm.start({ worldSize: cfg.world, table, secret: "checkpoint-test", jobId: "ckpt", epoch: cfg.epoch, deadlineMs: 20_000 });
  const world = await comm.world();

  const k = createCpuKernels({ threads: 1 });
  const model = createModel(k, raw, "rank_child", { maxTokens: 64, gradientCheckpointing: false });
  initWeights(model, 5);
  // DDP: whole units on every rank, each saves 1/world; FSDP (ZeRO-3): each rank its padded shard.
  const fsdp = cfg.mode === "fsdp" ? new Fsdp(k, model, world, null, world, { fullShard: true, prefetch: true }) : null;
  const ddp = fsdp ?? new Ddp(k, model, world);
  const pending: Promise<void>[] = [];
  let current = -1;
  const trainer = new Trainer(model, {
    schedule: { lr: 1e-2, lr_min: 1e-4, lr_start: 0, train_steps: cfg.steps, lr_warmup_ratio: 0.3, lr_decay_style: "cosine", lr_decay_ratio: 1 },
    weightDecay: 0.1, maxGradNorm: 1.0, shards: fsdp ?? undefined,
    collectives: {
      allReduceSum: (x) => ddp.allReduceSum(x),
      syncGrads: async () => {
        if (current === cfg.parkAt && cfg.rank === cfg.world - 1) {
          await Promise.all(pending); // earlier saves are durable and reported
          say({ ev: "parked", step: current });
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
        }
        await ddp.syncGrads();
      },
    },
  });
  const loader = createDataLoader({
    data: { train_path: cfg.data, data_type: "plaintext", max_seq_len: 16, on_bad_sample: "error" },
    train: { micro_batch_size: 2, global_batch_size: 4 * cfg.world, num_train_epochs: 3, dyn_bsz: true, dyn_bsz_buffer_size: 6, seed: 9, max_steps: cfg.steps },
  }, { dpRank: cfg.rank, dpSize: cfg.world, vocabSize: V, tokenizerPath: null });
  const c: Checkpointable = {
    units: () => model.layout.units.map((u) => {
      const s = fsdp ? fsdp.shardsOf(u.index) : { start: 0, param: model.params[u.index].host! };
      return { params: u.params, start: s.start, model: s.param, expAvg: trainer.m[u.index].host!, expAvgSq: trainer.v[u.index].host! };
    }),
    extraState: () => ({ optimizerSteps: trainer.optimizerSteps, loader: loader.state() }),
    restore: async (all) => {
      const st = all as { optimizerSteps: number; loader: LoaderState }[];
      trainer.optimizerSteps = st[0].optimizerSteps;
      await loader.restore(st.map((s) => s.loader));
    },
  };
  const ckpt = new RankCheckpointer({ outputDir: cfg.out, rank: cfg.rank, worldSize: cfg.world, replicated: !fsdp });
  let start = 0;
  if (cfg.resumeFrom) say({ ev: "resumed", step: (start = await ckpt.load(cfg.resumeFrom, c)) });

  for (let s = start; s < cfg.steps; s++) {
    const batch = (await loader.nextStep())!;
    current = s;
    if (fsdp) fsdp.beginStep();
    else (ddp as Ddp).beginStep(batch.microBatches.length);
    const m = await trainer.step(s, batch.microBatches);
    say({ ev: "loss", step: s, bits: new Uint32Array(new Float32Array([m.loss]).buffer)[0] });
    if (isSaveStep({ save_steps: cfg.save, save_epochs: 0 }, s + 1)) {
      const ticket = await ckpt.save(s + 1, c);
      pending.push(ticket.durable.then((report) => say({ ev: "saved", report })));
    }
    await new Promise((r) => setImmediate(r)); // the event loop turns between steps (as between NATS step commands)
  }
  await Promise.all(pending);
  await ckpt.close();
  const fd = openSync(join(cfg.out, `final_rank${cfg.rank}.f32`), "w");
  for (const u of c.units()) writeSync(fd, new Uint8Array(u.model.buffer, u.model.byteOffset, u.model.byteLength)); // this rank's params (FSDP: its shards)
  fsyncSync(fd);
  closeSync(fd);
  await comm.close();
  say({ ev: "done" });
  process.exit(0);
} catch (e) {
  say({ ev: "error", message: (e as Error).message });
  process.exit(1);
}
