// `bun run bench scaling --size tiny|small --ranks 1,2 [--modes ddp,fsdp2] [--batch B] [--steps S]
//   [--warmup W] [--backend cpu|webgpu] [--mixed true|false] [--no-ref]`: data-parallel training through the real coordinator + worker
// processes + TCP rings, on the llama_model.py shapes (tied, GQA, SwiGLU), random tokens, one
// compute thread per rank, a fixed per-rank batch (weak scaling). Reports tokens/s per rank
// count and mode, scaling efficiency = tps(N) / (N * tps(1)), per-rank peak and steady memory
// and model state (FSDP should hold ~1/N of it plus the gathered units). Then PyTorch DDP/FSDP
// on gloo (/work/shared/bench/fsdp_bench.py) in the same run where it works. `--backend webgpu`:
// every rank opens its own WebGPU device (with one GPU they share it) and stages its collectives
// through host memory (parallel/staging.ts); `--mixed` sets train.enable_mixed_precision (default
// false here: f32, as PyTorch's reference runs). Mode `ulysses`: fsdp2 with ulysses_parallel_size
// = the rank count (every rank computes a 1/N slice of the same rows; no PyTorch reference).
// Last line: one JSON object with every figure.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { ConfigSchema } from "../../configs/index.ts";
import { runJob } from "../../actors/coordinator.ts";

const SIZES: Record<string, { V: number; C: number; L: number; NH: number; NKV: number; I: number; seq: number }> = {
  tiny: { V: 4096, C: 256, L: 4, NH: 8, NKV: 4, I: 688, seq: 256 },
  small: { V: 32000, C: 512, L: 8, NH: 8, NKV: 2, I: 1376, seq: 512 },
};
const REF = "/work/shared/bench/fsdp_bench.py";

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Row { impl: string; mode: string; ranks: number; tokens_per_s: number | null; peak_rss_mb: number | null; rss_mb?: number | null; state_mb?: number | null; error?: string }

interface Run { size: string; batch: number; steps: number; warmup: number; backend: string; mixed: boolean }

async function ours(dir: string, mode: string, ranks: number, o: Run): Promise<Row> {
  const { size, batch, steps, warmup } = o;
  const out = join(dir, `${mode}-${ranks}`);
  const c = ConfigSchema.parse({
    model: { config_path: join(dir, "config.json") },
    data: { train_path: join(dir, "data.jsonl"), data_type: "plaintext", max_seq_len: SIZES[size].seq + 1 },
    train: {
      output_dir: out, lr: 3e-4, weight_decay: 0.1, max_steps: warmup + steps, micro_batch_size: 1, global_batch_size: batch * ranks,
      dyn_bsz: false, enable_gradient_checkpointing: false, seed: 1, enable_mixed_precision: o.mixed,
      ...(mode === "ulysses" ? { data_parallel_mode: "fsdp2", ulysses_parallel_size: ranks } : { data_parallel_mode: mode }),
    },
    launch: { world_size: ranks, heartbeat_s: 1, dead_after_s: 120 },
    kernels: { backend: o.backend, threads: 1 },
  });
  const logger = pino({ level: "warn" }, pino.destination({ dest: join(dir, `coord-${mode}-${ranks}.log`), sync: true }));
  const code = await runJob(c, logger, {});
  if (code !== 0) return { impl: "veomni-ts", mode, ranks, tokens_per_s: null, peak_rss_mb: null, error: `exit ${code}, see ${out}/logs` };
  const lines = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const timed = lines.slice(warmup);
  return {
    impl: "veomni-ts", mode, ranks,
    tokens_per_s: Math.round(median(timed.map((m) => m.tokens_per_s)) * 10) / 10,
    peak_rss_mb: Math.max(...lines.map((m) => m.peak_rss_mb)),
    rss_mb: Math.max(...timed.map((m) => m.rss_mb ?? 0)),
    state_mb: Math.max(...timed.map((m) => m.state_mb ?? 0)),
  };
}

async function torch(size: string, mode: string, ranks: number, batch: number, steps: number, warmup: number): Promise<Row> {
  const m = ranks === 1 ? "single" : mode.startsWith("fsdp") ? "fsdp" : "ddp";
  const p = Bun.spawn(["/usr/bin/python3", REF, "--mode", m, "--world", String(ranks), "--threads-per-rank", "1", "--batch", String(batch), "--steps", String(steps), "--warmup", String(warmup), "--size", size], {
    env: { ...process.env, OMP_WAIT_POLICY: "PASSIVE", LD_PRELOAD: "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4" },
    stdout: "pipe", stderr: "pipe",
  });
  const [code, text, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const last = text.trim().split("\n").at(-1) ?? "";
  try {
    const j = JSON.parse(last);
    const e = j.per_rank?.find((r: { error?: string }) => r.error)?.error;
    return { impl: "pytorch", mode: m, ranks, tokens_per_s: j.tokens_per_s_global ?? null, peak_rss_mb: j.max_rank_peak_rss_gib ? Math.round(j.max_rank_peak_rss_gib * 1024) : null, ...(e ? { error: e } : {}) };
  } catch {
    return { impl: "pytorch", mode: m, ranks, tokens_per_s: null, peak_rss_mb: null, error: `exit ${code}: ${(err || text).trim().split("\n").at(-1)?.slice(0, 200)}` };
  }
}

export async function main(args: string[]): Promise<void> {
  const size = arg(args, "size", "tiny");
  const s = SIZES[size];
  if (!s) throw new Error(`--size must be one of ${Object.keys(SIZES).join(", ")}, got ${size}`);
  const rankList = arg(args, "ranks", "1,2").split(",").map(Number);
  const modes = arg(args, "modes", "ddp,fsdp2").split(",");
  for (const m of modes) if (!["ddp", "fsdp1", "fsdp2", "ulysses"].includes(m)) throw new Error(`--modes: expected ddp, fsdp1, fsdp2 or ulysses, got ${m}`);
  const batch = Number(arg(args, "batch", size === "tiny" ? "4" : "1"));
  const steps = Number(arg(args, "steps", "4"));
  const warmup = Number(arg(args, "warmup", "1"));
  const backend = arg(args, "backend", "cpu");
  if (backend !== "cpu" && backend !== "webgpu") throw new Error(`--backend must be cpu or webgpu, got ${backend}`);
  const mixed = arg(args, "mixed", "false") === "true";
  const run: Run = { size, batch, steps, warmup, backend, mixed };
  const dir = mkdtempSync(join(tmpdir(), "veomni-scaling-"));
  // removed when every run succeeded; kept (and named) when one failed or threw: its error row
  // points at logs in it
  let ok = false;
  try {
    writeFileSync(join(dir, "config.json"), JSON.stringify({
      model_type: "llama", vocab_size: s.V, hidden_size: s.C, num_hidden_layers: s.L, num_attention_heads: s.NH, num_key_value_heads: s.NKV,
      intermediate_size: s.I, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true, max_position_embeddings: s.seq + 1, initializer_range: 0.02,
    }));
    // random tokens, one sample = seq+1 ids (seq predicted positions), enough for every step of the biggest run
    const need = batch * Math.max(...rankList) * (steps + warmup);
    let seed = 1234;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % s.V;
    writeFileSync(join(dir, "data.jsonl"), Array.from({ length: need }, () => JSON.stringify({ input_ids: Array.from({ length: s.seq + 1 }, rnd) })).join("\n") + "\n");
    console.log(`scaling: size ${size}, backend ${backend}${mixed ? " mixed precision" : " f32"}, ranks ${rankList.join(",")}, modes ${modes.join(",")}, per-rank batch ${batch} x seq ${s.seq}, ${steps} timed steps after ${warmup} warm-up, 1 thread per rank`);
    const rows: Row[] = [];
    for (const mode of modes) {
      for (const r of rankList) {
        if (r === 1 && mode !== modes[0]) continue; // one single-process baseline
        const row = await ours(dir, r === 1 ? "ddp" : mode, r, run);
        if (r === 1) row.mode = "single";
        rows.push(row);
        console.log(`  veomni-ts ${row.mode.padEnd(6)} ranks ${r}: ${row.tokens_per_s ?? "-"} tok/s, peak rss ${row.peak_rss_mb} MB, steady rss ${row.rss_mb} MB, model state ${row.state_mb} MB${row.error ? `  ERROR ${row.error}` : ""}`);
      }
    }
    if (!args.includes("--no-ref")) {
      for (const mode of modes.filter((m) => m !== "ulysses")) {
        for (const r of rankList) {
          if (r === 1 && mode !== modes[0]) continue;
          const row = await torch(size, mode, r, batch, steps, warmup);
          rows.push(row);
          console.log(`  pytorch   ${row.mode.padEnd(6)} ranks ${r}: ${row.tokens_per_s ?? "-"} tok/s, peak rss ${row.peak_rss_mb ?? "-"} MB${row.error ? `  ERROR ${row.error}` : ""}`);
        }
      }
    }
    const eff: Record<string, number | null> = {};
    for (const impl of ["veomni-ts", "pytorch"]) {
      const base = rows.find((x) => x.impl === impl && x.ranks === 1)?.tokens_per_s;
      for (const x of rows.filter((y) => y.impl === impl && y.ranks > 1)) {
        eff[`${impl}/${x.mode}/${x.ranks}`] = base && x.tokens_per_s ? Math.round((x.tokens_per_s / (x.ranks * base)) * 1000) / 1000 : null;
      }
    }
    const ratios: Record<string, number | null> = {};
    for (const x of rows.filter((y) => y.impl === "veomni-ts")) {
      const ref = rows.find((y) => y.impl === "pytorch" && y.ranks === x.ranks && (x.ranks === 1 || y.mode === (x.mode.startsWith("fsdp") ? "fsdp" : "ddp")));
      ratios[`${x.mode}/${x.ranks}`] = ref?.tokens_per_s && x.tokens_per_s ? Math.round((x.tokens_per_s / ref.tokens_per_s) * 100) / 100 : null;
    }
    console.log(`  scaling efficiency: ${JSON.stringify(eff)}`);
    console.log(`  veomni-ts / pytorch tokens/s: ${JSON.stringify(ratios)}`);
    console.log(JSON.stringify({ bench: "scaling", size, backend, mixed, batch_per_rank: batch, seq: s.seq, threads_per_rank: 1, rows, scaling_efficiency: eff, vs_pytorch: ratios }));
    ok = !rows.some((r) => r.error);
  } finally {
    if (ok) rmSync(dir, { recursive: true, force: true });
    else console.error(`scaling: a run failed; its configs, data and logs are kept in ${dir}`);
  }
}

if (import.meta.main) await main(process.argv.slice(2));
