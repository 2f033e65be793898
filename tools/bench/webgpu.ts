// `bun run bench webgpu [--sizes 1024,2048,4096] [--variants t128,t64,t16,t128h] [--reps R]
//   [--train tiny,small] [--batch B] [--steps S] [--no-train] [--ref] [--profile] [--mixed]`
// WebGPU backend figures on whatever adapter Dawn gives (name printed first):
//  - SGEMM GFLOP/s of every matmul.wgsl variant on square matrices (wall clock around R
//    back-to-back dispatches and one sync, after a warm-up that compiles the pipeline), and which
//    one "auto" would pick;
//  - training tokens/s (forward + backward + AdamW of tools/bench/train.ts's llama_model.py
//    shapes on random tokens) on WebGPU and, in the same run, on the CPU backend; with --ref also
//    PyTorch eager (/work/shared/bench/train_bench.py, CPU torch as installed); with --profile,
//    one more step with every dispatch timed by timestamp queries (GPU ms per kernel); with
//    --mixed also WebGPU training under train.enable_mixed_precision (f16 GEMM operands, mixed.ts).
// On a software adapter (lavapipe) defaults shrink to 1024 and tiny x 2 steps: correctness
// target only. Last line: one JSON object with the figures.
import { Trainer } from "../../actors/trainer.ts";
import type { MicroBatch } from "../../data/batch.ts";
import { createKernels, type Kernels } from "../../kernels/index.ts";
import { createWebGpuKernels } from "../../kernels/webgpu/index.ts";
import { MATMUL_VARIANTS, type MatmulVariant } from "../../kernels/webgpu/matmul.ts";
import { createModel, initWeights } from "../../models/index.ts";

const SIZES: Record<string, { V: number; C: number; L: number; NH: number; NKV: number; I: number; seq: number }> = {
  tiny: { V: 4096, C: 256, L: 4, NH: 8, NKV: 4, I: 688, seq: 256 },
  small: { V: 32000, C: 512, L: 8, NH: 8, NKV: 2, I: 1376, seq: 512 },
};

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1]! : dflt;
}

async function gemmGflops(variant: MatmulVariant, n: number, reps: number): Promise<number> {
  const k = await createWebGpuKernels({ tuning: { matmul: variant } });
  const a = k.alloc([n, n]), b = k.alloc([n, n]), c = k.alloc([n, n]);
  k.upload(a, Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5));
  k.upload(b, Float32Array.from({ length: n * n }, (_, i) => ((i * 104729) % 1000) / 1000 - 0.5));
  k.gemm(c, a, b, n, n, n, false, false, 1, 0);
  await k.sync(); // warm-up: pipeline compile + first run
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) k.gemm(c, a, b, n, n, n, false, false, 1, 0);
  await k.sync(); // SYNC POINT: waits for all reps
  const s = (performance.now() - t0) / 1000;
  for (const t of [a, b, c]) k.free(t);
  return (2 * n ** 3 * reps) / s / 1e9;
}

async function trainTps(k: Kernels, size: string, B: number, steps: number, warmup: number): Promise<{ tps: number; loss: number }> {
  const s = SIZES[size]!;
  const T = B * s.seq;
  const raw = {
    model_type: "llama", vocab_size: s.V, hidden_size: s.C, num_hidden_layers: s.L, num_attention_heads: s.NH,
    num_key_value_heads: s.NKV, intermediate_size: s.I, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true,
    max_position_embeddings: s.seq, initializer_range: 0.02,
  };
  const model = createModel(k, raw, `bench webgpu ${size}`, { maxTokens: T, gradientCheckpointing: false });
  initWeights(model, 0);
  const trainer = new Trainer(model, {
    schedule: { lr: 3e-4, lr_min: 0, lr_start: 0, train_steps: warmup + steps, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
    weightDecay: 0.1, maxGradNorm: 0,
  });
  let seed = 1;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % s.V);
  const times: number[] = [];
  let loss = 0;
  for (let i = 0; i < warmup + steps; i++) {
    const ids = Int32Array.from({ length: T }, rand);
    const mb: MicroBatch = {
      inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: T }, (_, j) => j % s.seq),
      cuSeqlens: Int32Array.from({ length: B + 1 }, (_, j) => j * s.seq), validTokens: B * (s.seq - 1),
    };
    const t0 = performance.now();
    loss = (await trainer.step(i, [mb])).loss; // the step ends at its loss/grad-norm sync points
    if (i >= warmup) times.push((performance.now() - t0) / 1000);
  }
  times.sort((x, y) => x - y);
  return { tps: T / times[Math.floor(times.length / 2)]!, loss };
}

export async function main(args: string[]): Promise<void> {
  const gpu = await createWebGpuKernels({ log: (l) => console.log(l) });
  const hw = gpu.rt.ctx.adapter.isHardware;
  console.log(`${gpu.description}${hw ? "" : "  [software adapter: correctness target only, small defaults]"}`);
  const sizes = arg(args, "sizes", hw ? "1024,2048,4096" : "1024").split(",").map(Number);
  const variants = arg(args, "variants", Object.keys(MATMUL_VARIANTS).join(",")).split(",") as MatmulVariant[];
  const reps = Number(arg(args, "reps", hw ? "20" : "1"));
  const matmul: Record<string, Record<string, number>> = {};
  for (const n of sizes) {
    matmul[n] = {};
    for (const v of variants) {
      if (!(v in MATMUL_VARIANTS)) throw new Error(`--variants: unknown ${v}; have ${Object.keys(MATMUL_VARIANTS).join(",")}`);
      if (v === "t128h" && !gpu.rt.ctx.f16) continue;
      const g = await gemmGflops(v, n, reps);
      matmul[n]![v] = Number(g.toFixed(2));
      console.log(`sgemm ${n}^3 ${v.padEnd(6)} ${g.toFixed(1).padStart(9)} GFLOP/s`);
    }
  }
  const train: Record<string, unknown>[] = [];
  if (!args.includes("--no-train")) {
    const B = Number(arg(args, "batch", hw ? "8" : "1"));
    const steps = Number(arg(args, "steps", hw ? "5" : "2"));
    for (const size of arg(args, "train", hw ? "tiny,small" : "tiny").split(",")) {
      if (!SIZES[size]) throw new Error(`--train: unknown size ${size}; have ${Object.keys(SIZES).join(",")}`);
      const before = { ...gpu.rt.stats };
      const w = await trainTps(gpu, size, B, steps, 1);
      const per = (key: keyof typeof before) => Math.round((gpu.rt.stats[key] - before[key]) / (steps + 1));
      console.log(`  per step: ${per("dispatches")} dispatches, ${per("submits")} submits, ${per("scratchCopies")} alias copies, ` +
        `${per("readBytes")} B read back, ${per("uploadBytes")} B uploaded`);
      if (args.includes("--profile")) {
        const prof = await createWebGpuKernels({ tuning: { profile: true } });
        if (!prof.rt.profiler) console.log("  (no timestamp-query feature: no profile)");
        else {
          await trainTps(prof, size, B, 1, 1);
          prof.rt.profiler.totals.clear();
          await trainTps(prof, size, B, 1, 0);
          console.log(`profile ${size} B=${B}, GPU time per kernel over one step (model set-up excluded):`);
          for (const line of prof.rt.profiler.table()) console.log(line);
        }
      }
      let mixed: { tps: number; loss: number } | null = null;
      if (args.includes("--mixed")) {
        const gm = await createWebGpuKernels({ mixedPrecision: true });
        console.log(`  mixed: ${gm.description}`);
        mixed = await trainTps(gm, size, B, steps, 1);
      }
      const cpu = await createKernels({ backend: "cpu", threads: 2 });
      const c = await trainTps(cpu, size, B, Math.min(steps, 2), 1);
      let torch: number | null = null;
      if (args.includes("--ref")) {
        const py = Bun.spawnSync(["python3", "/work/shared/bench/train_bench.py", "--size", size, "--batch", String(B),
          "--threads", "2", "--steps", String(steps), "--warmup", "1"], { stderr: "inherit" });
        const line = py.stdout.toString().trim().split("\n").pop() ?? "";
        torch = line.startsWith("{") ? (JSON.parse(line).tokens_per_s as number) : null;
      }
      const row = {
        size, batch: B, webgpu_tokens_per_s: Number(w.tps.toFixed(1)), cpu2_tokens_per_s: Number(c.tps.toFixed(1)),
        torch_tokens_per_s: torch, webgpu_vs_cpu: Number((w.tps / c.tps).toFixed(3)),
        webgpu_vs_torch: torch ? Number((w.tps / torch).toFixed(3)) : null, loss: Number(w.loss.toFixed(4)),
        ...(mixed ? { webgpu_mixed_tokens_per_s: Number(mixed.tps.toFixed(1)), mixed_loss: Number(mixed.loss.toFixed(4)) } : {}),
      };
      console.log(`train ${size} B=${B}: webgpu ${row.webgpu_tokens_per_s} tok/s${mixed ? ` (mixed ${row.webgpu_mixed_tokens_per_s})` : ""}, cpu(2 threads) ${row.cpu2_tokens_per_s} tok/s` +
        `${torch ? `, torch ${torch} tok/s` : ""}`);
      train.push(row);
    }
  }
  console.log(JSON.stringify({
    bench: "webgpu", adapter: gpu.rt.ctx.adapter.device, backend: gpu.rt.ctx.adapter.backend, hardware: hw,
    f16: gpu.rt.ctx.f16, subgroups: gpu.rt.ctx.subgroups, reps, matmul_gflops: matmul, train,
  }));
  process.exit(0);
}

if (import.meta.main) await main(process.argv.slice(2));
