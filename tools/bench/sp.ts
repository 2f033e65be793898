// `bun run bench sp --size tiny|small --seq 4096,8192 --sp 1,2,4 [--steps S] [--warmup W]
//   [--modes sync,async]`: Ulysses sequence parallelism, one packed row of `seq` tokens per step
// split over `sp` rank processes (real mesh, parallelize + Trainer: FSDP over the ulysses
// group, one compute thread per rank; tools/bench/sp_rank.ts). Per (seq, sp, mode): tokens/s,
// the share of step time the compute thread waited on Ulysses all-to-alls (rank median, step
// median), and activation memory per rank (the model's activation buffers + Ulysses' own);
// then the ratios the issue targets: activation(sp 4) / activation(sp 1), async / sync tokens/s.
// Last line: one JSON object with every figure.
import { join } from "node:path";

const SIZES: Record<string, { V: number; C: number; L: number; NH: number; NKV: number; I: number }> = {
  tiny: { V: 4096, C: 256, L: 4, NH: 8, NKV: 4, I: 688 },
  small: { V: 32000, C: 512, L: 8, NH: 8, NKV: 2, I: 1376 },
};

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const r3 = (x: number) => Math.round(x * 1000) / 1000;

interface RankOut { rank: number; step_s: number[]; wait_s: number[]; activation_mb: number; peak_rss_mb: number }
interface Row { seq: number; sp: number; mode: string; tokens_per_s: number; a2a_share: number; activation_mb: number; peak_rss_mb: number; step_s: number }

/** Lines of a child's stdout, one per call; null at its end. */
export function lineReader(stream: ReadableStream<Uint8Array>): () => Promise<string | null> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let buf = "";
  return async () => {
    for (;;) {
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        return line;
      }
      const { done, value } = await reader.read();
      if (done) return null;
      buf += dec.decode(value, { stream: true });
    }
  };
}

async function runRanks(seq: number, sp: number, async: boolean, steps: number, warmup: number, raw: object): Promise<RankOut[]> {
  const procs = Array.from({ length: sp }, (_, rank) => Bun.spawn([process.execPath, join(import.meta.dir, "sp_rank.ts"), JSON.stringify({ rank, world: sp, seq, async, steps, warmup, raw })], { stdin: "pipe", stdout: "pipe", stderr: "inherit" }));
  const readers = procs.map((p) => lineReader(p.stdout));
  const next = async (i: number) => {
    const line = await readers[i]();
    if (line === null) throw new Error(`rank ${i} (seq ${seq}, sp ${sp}) exited early: exit ${await procs[i].exited}`);
    return JSON.parse(line);
  };
  const table = (await Promise.all(procs.map((_, i) => next(i)))).map((m) => m.address);
  for (const p of procs) { p.stdin.write(JSON.stringify({ table }) + "\n"); p.stdin.flush(); }
  const outs = await Promise.all(procs.map((_, i) => next(i) as Promise<RankOut>));
  await Promise.all(procs.map((p) => p.exited));
  return outs;
}

export async function main(args: string[]): Promise<void> {
  const size = arg(args, "size", "small");
  const s = SIZES[size];
  if (!s) throw new Error(`--size must be one of ${Object.keys(SIZES).join(", ")}, got ${size}`);
  const seqs = arg(args, "seq", "4096,8192").split(",").map(Number);
  const sps = arg(args, "sp", "1,2,4").split(",").map(Number);
  const modes = arg(args, "modes", "sync,async").split(",");
  const steps = Number(arg(args, "steps", "2"));
  const warmup = Number(arg(args, "warmup", "1"));
  const raw = {
    model_type: "llama", vocab_size: s.V, hidden_size: s.C, num_hidden_layers: s.L, num_attention_heads: s.NH, num_key_value_heads: s.NKV,
    intermediate_size: s.I, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true, max_position_embeddings: Math.max(...seqs),
  };
  console.log(`sp: size ${size}, seq ${seqs.join(",")}, sp ${sps.join(",")}, modes ${modes.join(",")}, ${steps} timed steps after ${warmup} warm-up, 1 thread per rank, fsdp2 over the ulysses group`);
  const rows: Row[] = [];
  for (const seq of seqs) {
    for (const sp of sps) {
      for (const mode of sp === 1 ? ["single"] : modes) {
        const outs = await runRanks(seq, sp, mode === "async", steps, warmup, raw);
        const step = median(outs[0].step_s);
        const share = median(outs.map((o) => median(o.wait_s.map((w, i) => w / o.step_s[i]))));
        const row: Row = {
          seq, sp, mode, step_s: r3(step), tokens_per_s: Math.round(seq / step), a2a_share: r3(share),
          activation_mb: Math.round(Math.max(...outs.map((o) => o.activation_mb))), peak_rss_mb: Math.round(Math.max(...outs.map((o) => o.peak_rss_mb))),
        };
        rows.push(row);
        console.log(`  seq ${String(seq).padStart(5)} sp ${sp} ${mode.padEnd(6)}: ${row.tokens_per_s} tok/s (step ${row.step_s} s), all-to-all ${(100 * row.a2a_share).toFixed(1)}% of the step, activations ${row.activation_mb} MB/rank, peak rss ${row.peak_rss_mb} MB/rank`);
      }
    }
  }
  const ratios: Record<string, number> = {};
  for (const seq of seqs) {
    const one = rows.find((r) => r.seq === seq && r.sp === 1);
    for (const r of rows.filter((x) => x.seq === seq && x.sp > 1)) {
      if (one) ratios[`activation seq ${seq} sp ${r.sp} ${r.mode} / sp 1`] = r3(r.activation_mb / one.activation_mb);
      const sync = rows.find((x) => x.seq === seq && x.sp === r.sp && x.mode === "sync");
      if (r.mode === "async" && sync) ratios[`tok/s seq ${seq} sp ${r.sp} async / sync`] = r3(r.tokens_per_s / sync.tokens_per_s);
    }
  }
  for (const [k, v] of Object.entries(ratios)) console.log(`  ${k}: ${v}`);
  console.log(JSON.stringify({ bench: "sp", size, steps, warmup, threads_per_rank: 1, rows, ratios }));
}

if (import.meta.main) await main(process.argv.slice(2));
