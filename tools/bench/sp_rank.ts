// One rank of `bun run bench sp` (a real process): mesh transport, the plan builder
// (parallelize: Ulysses over every rank + FSDP over dp_shard x ulysses), the Trainer, one packed
// row of `seq` random tokens per step. Protocol on stdio: prints {address}, reads {table} on
// stdin, prints one JSON line {rank, step_s[], wait_s[], activation_mb, peak_rss_mb} at the end.
import { createInterface } from "node:readline";
import { ConfigSchema } from "../../configs/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { Comm } from "../../mesh/index.ts";
import { createModel, initWeights } from "../../models/index.ts";
import { parallelize } from "../../parallel/index.ts";

const o = JSON.parse(process.argv[2]) as { rank: number; world: number; seq: number; async: boolean; steps: number; warmup: number; raw: Record<string, unknown> };
const comm = await Comm.listen({ rank: o.rank, host: "127.0.0.1" });
console.log(JSON.stringify({ address: comm.address }));
const lines = createInterface({ input: process.stdin });
const { table } = JSON.parse(await new Promise<string>((r) => lines.once("line", r)));
if (o.world > 1) await comm.start({ worldSize: o.world, table, secret: "bench-sp", jobId: "bench-sp", epoch: 0, deadlineMs: 600_000 });

const k = createCpuKernels({ threads: 1 });
const config = ConfigSchema.parse({
  data: { max_seq_len: o.seq },
  train: { data_parallel_mode: "fsdp2", ulysses_parallel_size: o.world, ulysses_async: o.async, micro_batch_size: 1, enable_gradient_checkpointing: false },
  launch: { world_size: o.world },
});
const model = createModel(k, o.raw, "bench-sp", { maxTokens: Math.ceil(o.seq / o.world), gradientCheckpointing: false, maxPositions: o.seq });
initWeights(model, 1);
const plan = await parallelize({ k, model, config, rank: o.rank, world: o.world, comm: o.world > 1 ? comm : null });
const trainer = new Trainer(model, {
  schedule: { lr: 3e-4, lr_min: 0, lr_start: 0, train_steps: 100, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
  weightDecay: 0.1, maxGradNorm: 1, collectives: plan.collectives, shards: plan.shards,
});
// one document of seq tokens (the same on every rank of the group, as the loader would give)
let seed = 99;
const V = Number(o.raw.vocab_size);
const ids = Int32Array.from({ length: o.seq }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % V);
const mb = { inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: o.seq }, (_, i) => i), cuSeqlens: Int32Array.from([0, o.seq]), validTokens: o.seq - 1 };
const stepS: number[] = [], waitS: number[] = [];
for (let s = 0; s < o.warmup + o.steps; s++) {
  const t0 = performance.now();
  const mbs = plan.prepare([mb]);
  plan.beginStep(mbs.length);
  await trainer.step(s, mbs);
  const dt = (performance.now() - t0) / 1000;
  const w = plan.ulysses?.takeWaitSeconds() ?? 0;
  if (s >= o.warmup) { stepS.push(dt); waitS.push(w); }
}
const activation = model.activationBytes + (plan.ulysses?.activationBytes() ?? 0);
console.log(JSON.stringify({ rank: o.rank, step_s: stepS, wait_s: waitS, activation_mb: activation / 2 ** 20, peak_rss_mb: process.resourceUsage().maxRSS / 1024 }));
await comm.close();
process.exit(0);
