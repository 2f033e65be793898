// `bun run bench vl [--batch B] [--grid G] [--threads N] [--steps S] [--warmup W] [--no-ref]`:
// a small Qwen2-VL (vision depth 4, width 256, 4 heads, mlp_ratio 4; text V 4096, C 256, 4 layers,
// 8/4 heads, M-RoPE [4,6,6]) on B images of G x G patches (default 4 images of 16 x 16 = 224 px,
// 64 tokens each) packed with 64 text tokens per sample. Prints images/s through the vision tower
// (forward only) and tokens/s of training steps (forward + backward + AdamW), then runs the
// plain-torch reference model (tools/bench/vl_ref.py -> test/fixtures/make_vl_fixtures.py) on the
// same shapes in the same run. Last line: one JSON object with both and the ratios.
import { createKernels } from "../../kernels/index.ts";
import { createModel, initWeights } from "../../models/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import type { MicroBatch } from "../../data/batch.ts";

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

const CONFIG = {
  model_type: "qwen2_vl", vocab_size: 4096, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 8,
  num_key_value_heads: 4, rms_norm_eps: 1e-6, rope_theta: 1000000.0, tie_word_embeddings: true, max_position_embeddings: 4096,
  initializer_range: 0.02, vision_start_token_id: 4000, vision_end_token_id: 4001, image_token_id: 4002, video_token_id: 4003,
  rope_scaling: { type: "mrope", mrope_section: [4, 6, 6] },
  vision_config: { depth: 4, embed_dim: 256, mlp_ratio: 4, num_heads: 4, in_chans: 3, hidden_size: 256, patch_size: 14,
    spatial_merge_size: 2, temporal_patch_size: 2, hidden_act: "quick_gelu" },
};

/** Median of (wall s, process CPU s) over `n` timed runs after `warm` untimed ones. */
async function timed(fn: () => Promise<void>, n: number, warm: number): Promise<[number, number]> {
  for (let i = 0; i < warm; i++) await fn();
  const ts: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const c0 = process.cpuUsage(), t0 = performance.now();
    await fn();
    const c = process.cpuUsage(c0);
    ts.push([(performance.now() - t0) / 1000, (c.user + c.system) / 1e6]);
  }
  ts.sort((a, b) => a[0] - b[0]);
  return ts[Math.floor(ts.length / 2)];
}

export async function main(args: string[]): Promise<void> {
  const B = Number(arg(args, "batch", "4"));
  const side = Number(arg(args, "grid", "16"));
  const text = Number(arg(args, "text", "64"));
  const threads = Number(arg(args, "threads", "1"));
  const steps = Number(arg(args, "steps", "5"));
  const warmup = Number(arg(args, "warmup", "2"));
  const nImg = (side * side) / 4;
  const ids: number[] = [];
  const cu = [0];
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < text; i++) ids.push(5 + ((b * 7 + i) % 100));
    ids.push(CONFIG.vision_start_token_id, ...new Array(nImg).fill(CONFIG.image_token_id), CONFIG.vision_end_token_id, 2);
    cu.push(ids.length);
  }
  const T = ids.length;
  const k = await createKernels({ backend: "cpu", threads });
  const model = createModel(k, CONFIG, "bench vl config", { maxTokens: T, gradientCheckpointing: false });
  initWeights(model, 1);
  const grids = Int32Array.from({ length: 3 * B }, (_, i) => (i % 3 === 0 ? 1 : side));
  const pixels = Float32Array.from({ length: B * side * side * 1176 }, (_, i) => Math.sin(i * 0.37));
  const mb: MicroBatch = {
    inputIds: Int32Array.from(ids), labels: Int32Array.from(ids), positionIds: Int32Array.from(ids, (_, i) => i),
    cuSeqlens: Int32Array.from(cu), validTokens: T - 1, pixelValues: pixels, imageGridThw: grids,
  };
  const [vt, vcpu] = await timed(async () => {
    const out = await model.vision!.forward(model.params, {}, pixels, grids);
    await k.read(k.view(out, 0, [1])); // sync point
  }, steps, warmup);
  const trainer = new Trainer(model, {
    schedule: { lr: 1e-4, lr_min: 0, lr_start: 0, train_steps: 1000, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
    weightDecay: 0.1, maxGradNorm: 1,
  });
  let s = 0;
  const [st, scpu] = await timed(async () => void (await trainer.step(s++, [mb])), steps, warmup);
  const ours = {
    images_per_s: Number((B / vt).toFixed(2)), vision_cpu_s: Number(vcpu.toFixed(4)), tokens_per_s: Number((T / st).toFixed(1)),
    step_s: Number(st.toFixed(4)), step_cpu_s: Number(scpu.toFixed(4)), peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
  };
  console.log(`veomni-ts vl B=${B} grid=${side} T=${T} threads=${threads}: ${JSON.stringify(ours)}`);
  let ref: Record<string, number> | null = null;
  if (!args.includes("--no-ref")) {
    const py = Bun.spawnSync(["/usr/bin/python3", new URL("./vl_ref.py", import.meta.url).pathname, JSON.stringify(CONFIG),
      JSON.stringify({ batch: B, grid: side, text, threads, steps, warmup })], { stderr: "inherit" });
    const line = py.stdout.toString().trim().split("\n").pop() ?? "";
    console.log(`pytorch: ${line}`);
    ref = JSON.parse(line);
  }
  console.log(JSON.stringify({
    bench: "vl", batch: B, grid: side, tokens: T, threads, steps, ...ours,
    torch_images_per_s: ref ? Number(ref.images_per_s.toFixed(2)) : null, torch_tokens_per_s: ref ? Number(ref.tokens_per_s.toFixed(1)) : null,
    vision_speedup_vs_torch: ref ? Number((B / vt / ref.images_per_s).toFixed(3)) : null,
    train_speedup_vs_torch: ref ? Number((T / st / ref.tokens_per_s).toFixed(3)) : null,
    // CPU seconds per unit of work, torch / ours: fairest when other processes load the cores
    vision_cpu_speedup_vs_torch: ref ? Number((ref.vision_cpu_s / vcpu).toFixed(3)) : null,
    train_cpu_speedup_vs_torch: ref ? Number((ref.step_cpu_s / scpu).toFixed(3)) : null,
    torch_peak_rss_mb: ref ? Math.round(ref.peak_rss_mb) : null,
  }));
}

if (import.meta.main) await main(process.argv.slice(2));
