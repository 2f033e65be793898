// MoE benchmark: the dropless grouped SwiGLU experts (kernels/grouped_gemm.ts, one GEMM group per
// expert over tokens sorted by expert) against ONE dense SwiGLU of the same FLOPs (same rows, same
// widths: what the experts would cost if every row went to a single expert), forward + backward,
// and whole training steps of a small qwen3_moe model (tokens/s). Usage:
//   bun run bench moe --experts 8 --topk 2 --ep 1,2 [--threads 1] [--tokens 2048] [--hidden 512]
//       [--moe-intermediate 512] [--reps 5] [--mixed] [--rounds 1]
// --mixed: train.enable_mixed_precision (bf16 GEMM operands, f32 accumulation) for both sides.
// With an --ep list holding a size > 1: the same model trained by max(ep) rank processes for each
// ep of the list (tools/bench/moe_ep.ts): tokens/s, CPU s/step and the all-to-all share of the
// step; --rounds N runs the list N times, interleaved.
// Prints human lines; the LAST line is one JSON object with the figures.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createCpuKernels, groupedSwigluBackward, groupedSwigluForward, type Kernels, type Tensor } from "../../kernels/index.ts";
import { initModelFromConfig } from "../../models/index.ts";
import { Router } from "../../models/blocks/router.ts";
import { resolveConfig } from "../../models/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import type { MicroBatch } from "../../data/batch.ts";
import { runEpCase, type EpRow } from "./moe_ep.ts";

type T32 = Tensor<"f32">;
const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const E = Number(arg("experts", "8")), K = Number(arg("topk", "2")), threads = Number(arg("threads", "1"));
const T = Number(arg("tokens", "2048")), C = Number(arg("hidden", "512")), I = Number(arg("moe-intermediate", "512"));
const reps = Number(arg("reps", "5"));
const eps = arg("ep", "1").split(",").map(Number);
if (eps.some((e) => !Number.isInteger(e) || e < 1 || E % e !== 0)) {
  console.error(`bench moe: --ep ${eps.join(",")}: each must be a positive integer dividing --experts ${E}`);
  process.exit(2);
}

function rand(k: Kernels, n: number, seed: number, scale = 0.05): T32 {
  const t = k.alloc([n]);
  const h = t.host as Float32Array;
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    h[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return t;
}

/** Median wall ms of each fn over reps after one warm-up, the fns interleaved round by round
 *  (on a shared machine the load changes by the second: each ratio compares the same minutes). */
function timeEach(fns: (() => void)[]): number[] {
  for (const fn of fns) fn();
  const ts: number[][] = fns.map(() => []);
  for (let i = 0; i < reps; i++) {
    fns.forEach((fn, j) => {
      const t0 = performance.now();
      fn();
      ts[j].push(performance.now() - t0);
    });
  }
  return ts.map((t) => t.sort((a, b) => a - b)[Math.floor(t.length / 2)]);
}

const mixed = args.includes("--mixed"); // train.enable_mixed_precision: bf16 GEMM operands, f32 accumulation
const k = createCpuKernels({ threads, mixedPrecision: mixed });
console.log(`${k.description}; E ${E}, top-${K}, T ${T} tokens, C ${C}, expert width ${I}; median of ${reps}`);

// routing of random router logits (HF softmax top-k): realistic, uneven group sizes
const m = resolveConfig({ model_type: "qwen3_moe", vocab_size: 64, hidden_size: C, intermediate_size: I, num_hidden_layers: 1,
  num_attention_heads: 8, num_experts: E, num_experts_per_tok: K, moe_intermediate_size: I }, "bench").config.moe!;
const router = new Router(m);
const routing = router.alloc(T);
const logits = (rand(k, T * E, 7, 1).host as Float32Array);
router.route(routing, logits, T, null);
const R = T * K;
const sizes = Array.from({ length: E }, (_, e) => routing.off[e + 1] - routing.off[e]);
console.log(`rows per expert: ${sizes.join(" ")} (R = ${R})`);

const xs = rand(k, R * C, 1), wgu = rand(k, E * 2 * I * C, 2), wd = rand(k, E * C * I, 3), dys = rand(k, R * C, 4);
const ys = k.alloc([R * C]), gu = k.alloc([2 * I * R]), dxs = k.alloc([R * C]), dwgu = k.alloc([E * 2 * I * C]), dwd = k.alloc([E * C * I]);
const scratch = { h: k.alloc([I * R]), dh: k.alloc([I * R]), dgu: k.alloc([2 * I * R]) };
const fwdFlops = 6 * R * C * I, bwdFlops = 12 * R * C * I;
// against the same FLOPs as one dense SwiGLU over all R rows (one "expert" holding every row: three
// GEMMs over R rows, what the dense Mlp runs), forward and backward, interleaved
const one = Int32Array.from([0, R]);
const [gFwd, dFwd, gBwd, dBwd] = timeEach([
  () => groupedSwigluForward(k, ys, gu, xs, wgu, wd, routing.off, E, C, I, scratch.h),
  () => groupedSwigluForward(k, ys, gu, xs, k.view(wgu, 0, [2 * I * C]), k.view(wd, 0, [C * I]), one, 1, C, I, scratch.h),
  () => groupedSwigluBackward(k, dxs, dwgu, dwd, dys, xs, gu, wgu, wd, routing.off, E, C, I, scratch),
  () => groupedSwigluBackward(k, dxs, k.view(dwgu, 0, [2 * I * C]), k.view(dwd, 0, [C * I]), dys, xs, gu,
    k.view(wgu, 0, [2 * I * C]), k.view(wd, 0, [C * I]), one, 1, C, I, scratch),
]);
const gf = (flops: number, ms: number) => flops / ms / 1e6;
console.log(`grouped experts: fwd ${gFwd.toFixed(1)} ms (${gf(fwdFlops, gFwd).toFixed(1)} GFLOP/s), bwd ${gBwd.toFixed(1)} ms (${gf(bwdFlops, gBwd).toFixed(1)} GFLOP/s)`);
console.log(`dense same FLOPs: fwd ${dFwd.toFixed(1)} ms (${gf(fwdFlops, dFwd).toFixed(1)} GFLOP/s), bwd ${dBwd.toFixed(1)} ms (${gf(bwdFlops, dBwd).toFixed(1)} GFLOP/s)`);
const ratio = (dFwd + dBwd) / (gFwd + gBwd);
console.log(`grouped / dense GFLOP/s (fwd+bwd): ${ratio.toFixed(2)}x (target >= 0.8x)`);

// whole training steps of a small qwen3_moe (2 layers, every layer sparse), random init
const dir = mkdtempSync(`${tmpdir()}/veomni-bench-moe-`);
let tokS = 0;
const raw = { model_type: "qwen3_moe", vocab_size: 4096, hidden_size: C, intermediate_size: 4 * C,
  num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 4, head_dim: C / 8, num_experts: E, num_experts_per_tok: K,
  moe_intermediate_size: I, norm_topk_prob: true, output_router_logits: true, router_aux_loss_coef: 0.001, max_position_embeddings: T };
try {
  writeFileSync(`${dir}/config.json`, JSON.stringify(raw));
  const Tm = Math.min(T, 1024);
  const model = initModelFromConfig(k, `${dir}/config.json`, 1, { maxTokens: Tm, gradientCheckpointing: false });
  const trainer = new Trainer(model, { schedule: { lr: 1e-3, lr_min: 0, lr_start: 0, train_steps: 100, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
    weightDecay: 0.1, maxGradNorm: 1 });
  let s = 99;
  const ids = Int32Array.from({ length: Tm }, () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) % 4096);
  const mb: MicroBatch = { inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: Tm }, (_, i) => i), cuSeqlens: Int32Array.from([0, Tm]), validTokens: Tm - 1 };
  await trainer.step(0, [mb]); // warm-up
  const ts: number[] = [];
  for (let step = 1; step <= reps; step++) {
    const t0 = performance.now();
    await trainer.step(step, [mb]);
    ts.push(performance.now() - t0);
  }
  const ms = ts.sort((a, b) => a - b)[Math.floor(reps / 2)];
  tokS = Tm / (ms / 1000);
  console.log(`qwen3_moe 2 layers, C ${C}, ${E} experts of ${I}, top-${K}: ${Tm} tokens/step, ${ms.toFixed(0)} ms/step, ${tokS.toFixed(0)} tok/s (ep 1: all-to-all share 0)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
// expert parallelism: every ep of the list on max(ep) rank processes, 1 thread each
const epRows: EpRow[] = [];
if (eps.some((e) => e > 1)) {
  const W = Math.max(...eps), Tm = Math.min(T, 1024);
  console.log(`expert parallel: ${W} rank processes, 1 thread each, fsdp2 over ${W}, one row of ${Tm} tokens per rank per step, median of ${reps} steps`);
  // --rounds N: the ep list N times, interleaved, so each ep sees the same machine load
  for (let round = 0; round < Number(arg("rounds", "1")); round++) {
    for (const ep of eps) {
      const r = await runEpCase(ep, W, Tm, reps, 1, raw, mixed);
      epRows.push(r);
      console.log(`  ep ${ep} (ep_fsdp ${W / ep}): ${r.tokensPerS.toFixed(0)} tok/s over ${W} ranks (${(r.stepS * 1000).toFixed(0)} ms/step, ${r.cpuSPerStep.toFixed(2)} CPU s/step), expert all-to-all ${(100 * r.allToAllShare).toFixed(1)}% of the step`);
    }
  }
}
console.log(JSON.stringify({ bench: "moe", threads, mixed, E, K, T, C, I, rowsPerExpert: sizes,
  grouped: { fwdMs: gFwd, bwdMs: gBwd, fwdGflops: gf(fwdFlops, gFwd), bwdGflops: gf(bwdFlops, gBwd) },
  dense: { fwdMs: dFwd, bwdMs: dBwd, fwdGflops: gf(fwdFlops, dFwd), bwdGflops: gf(bwdFlops, dBwd) },
  groupedVsDense: ratio, ep: { 1: { tokensPerS: tokS, allToAllShare: 0 } }, epRanks: epRows }));
