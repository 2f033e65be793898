// MoE under Ulysses sequence parallelism against one process, same data and seed: the
// load-balancing aux loss of a micro-batch is HF's load_balancing_loss_func over the WHOLE packed
// row (every slice's router statistics summed over the Ulysses group, the group's padding tokens
// left out), so objective, lm_loss, aux_loss, expert load, grad norms and parameters after 5
// steps equal one process's. (Per-slice aux losses, averaged, would not: E * sum f_e P_e is not
// linear in the tokens.) Rows are packed by dyn_bsz with lengths mostly not multiples of the
// group size, so padding exists. qwen3_moe-tiny's config.json: 4 query / 2 KV heads, sparse layers
// 1 and 2, output_router_logits true, router_aux_loss_coef 0.02. Real workers, real TCP mesh.
import { beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import { ConfigSchema } from "../../configs/index.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { close, writeTinyModelAndData } from "./actors_parity_setup.ts";

const dir = tempDir("moe-sp");
const MODEL = join(new URL("../fixtures/", import.meta.url).pathname, "qwen3_moe-tiny/config.json");

async function run(world: number, train: object = {}): Promise<MetricsLine[]> {
  const out = tempDir(`moe-sp-w${world}`);
  const { logger, file } = fileLogger(out);
  const { dataPath } = writeTinyModelAndData(dir);
  const config = ConfigSchema.parse({
    model: { config_path: MODEL },
    data: { train_path: dataPath, data_type: "plaintext", max_seq_len: 16 },
    train: { output_dir: out, lr: 1e-3, max_steps: 5, global_batch_size: 4, seed: 7,
      weight_decay: 0.1, max_grad_norm: 1.0,
      enable_mixed_precision: false, // f32: the plan vs one process, to f32 tolerance (docs/mixed_precision.md)
      dyn_bsz: true, micro_batch_size: 2, dyn_bsz_buffer_size: 4, save_steps: 0, ...train },
    launch: { heartbeat_s: 0.5, dead_after_s: 20, world_size: world },
    kernels: { backend: "cpu", threads: 1 },
  });
  const code = await runJob(config, logger);
  if (code !== 0) throw new Error(`moe world ${world} ${JSON.stringify(train)}: exit ${code}; see ${file}`);
  return readMetrics(out) as unknown as MetricsLine[];
}

function expectSame(ref: MetricsLine[], got: MetricsLine[], what: string): void {
  expect(got.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
  expect(got.map((m) => m.tokens)).toEqual(ref.map((m) => m.tokens));
  close(ref.map((m) => m.aux_loss!), got.map((m) => m.aux_loss!), 1e-6, `${what}: aux losses`);
  close(ref.map((m) => m.lm_loss!), got.map((m) => m.lm_loss!), 1e-5, `${what}: lm losses`);
  close(ref.map((m) => m.loss), got.map((m) => m.loss), 1e-5, `${what}: objectives`);
  expect(got.map((m) => m.expert_load)).toEqual(ref.map((m) => m.expert_load)); // padding routes nowhere
  close(ref.map((m) => m.grad_norm), got.map((m) => m.grad_norm), 1e-4, `${what}: grad norms`);
  close(ref.at(-1)!.param_stats!, got.at(-1)!.param_stats!, 1e-4, `${what}: parameter stats after 5 steps`);
  expect(childPids()).toEqual([]);
}

let one: MetricsLine[];
beforeAll(async () => {
  one = await run(1);
}, 60_000);

test("one process: the packed rows' lengths are not all multiples of 2, so the Ulysses runs pad", () => {
  // tokens per step are the real tokens; an odd total means some row of the step has odd length
  expect(one.some((m) => m.tokens % 2 === 1)).toBe(true);
  for (const m of one) for (const l of m.expert_load!) expect(l.reduce((a, b) => a + b, 0)).toBe(2 * m.tokens);
});

test("ulysses 2 on 2 ranks (fsdp1) = one process: aux loss over the whole row, objective, expert load, grad norms, parameters", async () => {
  expectSame(one, await run(2, { data_parallel_mode: "fsdp1", ulysses_parallel_size: 2 }), "ulysses 2");
}, 60_000);

test("ulysses 2 x dp 2 on 4 ranks (ddp, activation checkpointing) = dp 2 on 2 ranks: the statistics are summed over the Ulysses group only", async () => {
  const dp2 = await run(2, { data_parallel_mode: "ddp" });
  expectSame(dp2, await run(4, { data_parallel_mode: "ddp", ulysses_parallel_size: 2, enable_gradient_checkpointing: true }), "ulysses 2 x dp 2");
}, 90_000);
