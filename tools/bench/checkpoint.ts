// bun run bench checkpoint [--size tiny|small|100m] [--ranks 2] [--tokens 2048] [--dir PATH]
// Async sharded save of a real model's FSDP shards (params + AdamW m, v, f32) by R rank
// processes, each running real training steps (forward + backward) of the model while its
// writer thread streams the shard to disk. Reports per rank: the stall (time save() blocks the
// step loop: staging copy), the step time with a save in flight vs without, time to durable
// (fsynced) and the commit; overall write GB/s against `dd conv=fsync` of the same bytes, same
// disk, same run. Last line: one JSON object.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AsyncSaver, type Piece, type RankReport, commitCheckpoint, evenShard, shardPieces } from "../../checkpoint/index.ts";
import { createKernels } from "../../kernels/index.ts";
import { createModel, initWeights } from "../../models/index.ts";

const SIZES: Record<string, Record<string, unknown>> = {
  tiny: { vocab_size: 4096, hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 4, intermediate_size: 688 },
  small: { vocab_size: 32000, hidden_size: 512, num_hidden_layers: 8, num_attention_heads: 8, num_key_value_heads: 2, intermediate_size: 1376 },
  "100m": { vocab_size: 32000, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 4, intermediate_size: 2048 },
};

function flag(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
}

async function rankMain(args: string[]): Promise<void> {
  const rank = Number(flag(args, "rank", "0")), world = Number(flag(args, "ranks", "2"));
  const size = flag(args, "size", "small"), T = Number(flag(args, "tokens", "2048")), dir = flag(args, "dir", "");
  const k = await createKernels({ backend: "cpu", threads: 1 });
  const raw = { model_type: "llama", tie_word_embeddings: true, max_position_embeddings: 4096, rms_norm_eps: 1e-5, ...SIZES[size] };
  const model = createModel(k, raw, `bench ${size}`, { maxTokens: T, gradientCheckpointing: false });
  initWeights(model, 1);
  model.allocGrads();
  // This rank's FSDP shard of every unit: params (real), AdamW m and v (finite stand-ins).
  const pieces: Piece[] = [];
  for (const u of model.layout.units) {
    const { start, size: n } = evenShard(u.numel, world, rank);
    const len = Math.max(0, Math.min(n, u.numel - start));
    const p = model.params[u.index].host!.subarray(start, start + len);
    const m = new Float32Array(len).fill(1e-3), v = new Float32Array(len).fill(1e-6);
    pieces.push(...shardPieces(u.params, start, p, "model"), ...shardPieces(u.params, start, m, "optim", "optim.exp_avg."), ...shardPieces(u.params, start, v, "optim", "optim.exp_avg_sq."));
  }
  const bytes = pieces.reduce((a, p) => a + p.data.byteLength, 0);
  const saver = new AsyncSaver(rank);
  saver.reserve(bytes);
  const V = SIZES[size].vocab_size as number, S = 4;
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919 + rank * 104729) % V);
  const cu = Int32Array.from({ length: S + 1 }, (_, s) => Math.round((s * T) / S));
  const positionIds = Int32Array.from({ length: T }, (_, i) => i - cu[Math.floor((i * S) / T)]);
  const mb = { inputIds: ids, labels: ids, positionIds, cuSeqlens: cu, validTokens: T - S };
  const loss = k.alloc([1], "f32", { shared: false });
  const step = async () => {
    const t0 = performance.now();
    model.zeroGrads();
    await model.forward(mb, loss, 1 / mb.validTokens);
    await model.backward();
    await k.read(loss); // sync point
    return performance.now() - t0;
  };
  await step(); // warm-up
  const stepMs = await step();
  const go = () => new Promise<void>((r) => process.stdin.once("data", () => r())); // all ranks start a phase together
  const wall = () => performance.timeOrigin + performance.now();
  console.log(`READY ${rank}`);
  await go();
  // Phase 1: save while training (the real case): stall, step time with the writer running.
  const t0 = wall();
  const ticket = await saver.save({ dir: join(dir, "global_step_1"), step: 1, pieces, extra: { step: 1, rank } });
  const stepDuringMs = await step(); // training goes on while the writer streams
  const report: RankReport = await ticket.durable;
  console.log(`READY2 ${rank}`);
  await go();
  // Phase 2: the same save with the CPUs otherwise idle: the writer's own throughput vs dd.
  const t1 = wall();
  const idle: RankReport = await (await saver.save({ dir: join(dir, "global_step_2"), step: 2, pieces, extra: { step: 2, rank } })).durable;
  await saver.close();
  console.log(`RESULT ${JSON.stringify({
    rank, stepMs, stepDuringMs, stallMs: ticket.stallMs, durableMs: report.durableAt - t0, idleDurableMs: idle.durableAt - t1,
    t0, t1, end0: report.durableAt, end1: idle.durableAt, bytes, report,
  })}`);
  process.exit(0);
}

async function main(args: string[]): Promise<void> {
  const size = flag(args, "size", "small"), world = Number(flag(args, "ranks", "2")), T = flag(args, "tokens", "2048");
  if (!SIZES[size]) throw new Error(`--size ${size}: expected one of ${Object.keys(SIZES).join(", ")}`);
  const root = mkdtempSync(join(flag(args, "dir", tmpdir()), "veomni-bench-ckpt-"));
  const dir = join(root, "checkpoints");
  try {
    const procs = [...Array(world).keys()].map((r) => Bun.spawn([process.execPath, import.meta.path, "--rank", String(r), "--ranks", String(world), "--size", size, "--tokens", T, "--dir", dir], { stdin: "pipe", stdout: "pipe", stderr: "inherit" }));
    const lines = procs.map((p) => {
      const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
      let buf = "";
      return async (prefix: string) => {
        for (;;) {
          const hit = buf.split("\n").find((l) => l.startsWith(prefix));
          if (hit) return hit.slice(prefix.length).trim();
          const { value, done } = await reader.read();
          if (done) throw new Error(`bench rank exited before ${prefix}`);
          buf += new TextDecoder().decode(value);
        }
      };
    });
    const goAll = () => { for (const p of procs) { p.stdin!.write("GO\n"); p.stdin!.flush(); } };
    await Promise.all(lines.map((l) => l("READY ")));
    goAll();
    await Promise.all(lines.map((l) => l("READY2")));
    goAll();
    const results = await Promise.all(lines.map(async (l) => JSON.parse(await l("RESULT"))));
    await Promise.all(procs.map((p) => p.exited));
    const tc = performance.now();
    commitCheckpoint({ dir: join(dir, "global_step_1"), step: 1, epoch: 0, worldSize: world, mesh: { dp_shard: world }, reports: results.map((r) => r.report) });
    const commitMs = performance.now() - tc;
    const totalBytes = results.reduce((a, r) => a + r.bytes, 0);
    // All ranks' bytes over the span from the common start to the last rank's fsync.
    const span = (t: string, e: string) => Math.max(...results.map((r) => r[e])) - Math.min(...results.map((r) => r[t]));
    const durableMs = span("t0", "end0") + commitMs;
    const idleMs = span("t1", "end1") + commitMs;
    const trainGBs = totalBytes / 1e6 / durableMs, idleGBs = totalBytes / 1e6 / idleMs;
    // The disk's limit: dd of the same bytes with fsync, same folder, same run, CPUs idle too.
    const count = Math.ceil(totalBytes / (4 << 20));
    const td = performance.now();
    execFileSync("dd", ["if=/dev/zero", `of=${join(root, "dd.bin")}`, "bs=4M", `count=${count}`, "conv=fsync"], { stdio: "ignore" });
    const ddGBs = (count * (4 << 20)) / 1e6 / (performance.now() - td);
    for (const r of results) {
      console.log(`rank ${r.rank}: shard ${(r.bytes / 1e6).toFixed(0)} MB, stall ${r.stallMs.toFixed(1)} ms = ${((100 * r.stallMs) / r.stepMs).toFixed(2)}% of a ${(r.stepMs / 1000).toFixed(2)} s step (${T} tokens); step with save in flight ${(r.stepDuringMs / 1000).toFixed(2)} s; durable after ${(r.durableMs / 1000).toFixed(2)} s (training) / ${(r.idleDurableMs / 1000).toFixed(2)} s (idle)`);
    }
    console.log(`${size} model, ${world} ranks, ${(totalBytes / 1e6).toFixed(0)} MB per checkpoint, commit ${commitMs.toFixed(1)} ms`);
    console.log(`  durable while training: ${(durableMs / 1000).toFixed(2)} s = ${trainGBs.toFixed(3)} GB/s (${(trainGBs / ddGBs).toFixed(2)}x dd)`);
    console.log(`  durable, CPUs idle:     ${(idleMs / 1000).toFixed(2)} s = ${idleGBs.toFixed(3)} GB/s (${(idleGBs / ddGBs).toFixed(2)}x dd conv=fsync ${ddGBs.toFixed(3)} GB/s)`);
    const maxStallPct = Math.max(...results.map((r) => (100 * r.stallMs) / r.stepMs));
    console.log(JSON.stringify({
      bench: "checkpoint", size, ranks: world, tokens_per_step: Number(T), bytes: totalBytes,
      stall_ms: results.map((r) => +r.stallMs.toFixed(2)), step_ms: results.map((r) => +r.stepMs.toFixed(0)),
      step_with_save_ms: results.map((r) => +r.stepDuringMs.toFixed(0)), max_stall_pct_of_step: +maxStallPct.toFixed(3),
      durable_training_s: +(durableMs / 1000).toFixed(3), durable_idle_s: +(idleMs / 1000).toFixed(3), commit_ms: +commitMs.toFixed(2),
      write_gbs_training: +trainGBs.toFixed(3), write_gbs_idle: +idleGBs.toFixed(3), dd_fsync_gbs: +ddGBs.toFixed(3),
      write_vs_dd_training: +(trainGBs / ddGBs).toFixed(3), write_vs_dd_idle: +(idleGBs / ddGBs).toFixed(3),
    }));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const args = process.argv.slice(2);
if (args.includes("--rank")) await rankMain(args);
else await main(args);
