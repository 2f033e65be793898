// One rank of `bun run bench moe --ep ...` (a real process): mesh transport, the plan builder
// (parallelize: FSDP over every rank, and with ep > 1 expert parallelism over the expert mesh
// [ep_fsdp, ep]), the Trainer, one packed row of `tokens` random tokens per rank per step.
// Protocol on stdio (as sp_rank.ts): prints {address}, reads {table} on stdin, prints one JSON
// line {rank, step_s[], wait_s[], cpu_s[]} at the end (wait_s: the expert all-to-alls' wait per
// step; cpu_s: the process's CPU seconds per step, compute and transport threads).
import { createInterface } from "node:readline";
import { ConfigSchema } from "../../configs/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { Comm } from "../../mesh/index.ts";
import { createModel, initSource } from "../../models/index.ts";
import { parallelize } from "../../parallel/index.ts";

const o = JSON.parse(process.argv[2]) as { rank: number; world: number; ep: number; tokens: number; steps: number; warmup: number; mixed: boolean; raw: Record<string, unknown> };
const comm = await Comm.listen({ rank: o.rank, host: "127.0.0.1" });
console.log(JSON.stringify({ address: comm.address }));
const lines = createInterface({ input: process.stdin });
const { table } = JSON.parse(await new Promise<string>((r) => lines.once("line", r)));
await comm.start({ worldSize: o.world, table, secret: "bench-moe-ep", jobId: "bench-moe-ep", epoch: 0, deadlineMs: 600_000 });

const k = createCpuKernels({ threads: 1, mixedPrecision: o.mixed });
const config = ConfigSchema.parse({
  data: { max_seq_len: o.tokens },
  train: { data_parallel_mode: "fsdp2", expert_parallel_size: o.ep, micro_batch_size: 1, enable_gradient_checkpointing: false, enable_mixed_precision: o.mixed },
  launch: { world_size: o.world },
});
const model = createModel(k, o.raw, "bench-moe-ep", { maxTokens: o.tokens, gradientCheckpointing: false, meta: true });
const plan = await parallelize({ k, model, config, rank: o.rank, world: o.world, comm, source: initSource(1, 0.02) });
const trainer = new Trainer(model, {
  schedule: { lr: 1e-3, lr_min: 0, lr_start: 0, train_steps: 100, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
  weightDecay: 0.1, maxGradNorm: 1, collectives: plan.collectives, shards: plan.shards,
});
// this rank's own row (data parallel: every rank reads different samples)
let seed = 99 + o.rank;
const V = Number(o.raw.vocab_size);
const ids = Int32Array.from({ length: o.tokens }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % V);
const mb = { inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: o.tokens }, (_, i) => i), cuSeqlens: Int32Array.from([0, o.tokens]), validTokens: o.tokens - 1 };
const stepS: number[] = [], waitS: number[] = [], cpuS: number[] = [];
for (let s = 0; s < o.warmup + o.steps; s++) {
  const t0 = performance.now(), c0 = process.cpuUsage();
  plan.beginStep(1);
  await trainer.step(s, [mb]);
  const dt = (performance.now() - t0) / 1000, c = process.cpuUsage(c0);
  const w = plan.experts?.takeWaitSeconds() ?? 0;
  if (s >= o.warmup) { stepS.push(dt); waitS.push(w); cpuS.push((c.user + c.system) / 1e6); }
}
console.log(JSON.stringify({ rank: o.rank, step_s: stepS, wait_s: waitS, cpu_s: cpuS }));
await comm.close();
process.exit(0);
