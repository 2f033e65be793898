// The expert-parallel cases of `bun run bench moe --ep 1,2`: for each ep, W = max(ep list) rank
// processes (tools/bench/moe_ep_rank.ts) train the bench's qwen3_moe with FSDP over W ranks and
// expert_parallel_size ep (ep 1: every rank holds every expert, the plain FSDP baseline at the
// same world size). Per ep: tokens/s over all ranks and the share of the step the compute thread
// waited on the expert all-to-alls (counts, dispatch, combine; forward and backward), rank median
// of step medians, and the CPU seconds all ranks spent per step (less sensitive to a shared
// machine's load than wall time).
import { join } from "node:path";
import { lineReader } from "./sp.ts";

export interface EpRow { ep: number; world: number; tokensPerS: number; stepS: number; allToAllShare: number; cpuSPerStep: number }

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function runEpCase(ep: number, world: number, tokens: number, steps: number, warmup: number, raw: object, mixed = false): Promise<EpRow> {
  const procs = Array.from({ length: world }, (_, rank) => Bun.spawn([process.execPath, join(import.meta.dir, "moe_ep_rank.ts"),
    JSON.stringify({ rank, world, ep, tokens, steps, warmup, mixed, raw })], { stdin: "pipe", stdout: "pipe", stderr: "inherit" }));
  const readers = procs.map((p) => lineReader(p.stdout));
  const next = async (i: number) => {
    const line = await readers[i]();
    if (line === null) throw new Error(`bench moe: rank ${i} (ep ${ep}, world ${world}) exited early: exit ${await procs[i].exited}`);
    return JSON.parse(line);
  };
  const table = (await Promise.all(procs.map((_, i) => next(i)))).map((m) => m.address);
  for (const p of procs) { p.stdin.write(JSON.stringify({ table }) + "\n"); p.stdin.flush(); }
  const outs = (await Promise.all(procs.map((_, i) => next(i)))) as { step_s: number[]; wait_s: number[]; cpu_s: number[] }[];
  await Promise.all(procs.map((p) => p.exited));
  const stepS = median(outs.map((o) => median(o.step_s)));
  const share = median(outs.map((o) => median(o.wait_s.map((w, i) => w / o.step_s[i]))));
  const cpu = outs.reduce((a, o) => a + median(o.cpu_s), 0); // CPU seconds of all ranks per step
  return { ep, world, stepS, tokensPerS: (world * tokens) / stepS, allToAllShare: share, cpuSPerStep: cpu };
}
