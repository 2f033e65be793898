// World size 1 through the coordinator and a worker process on the WebGPU backend (lavapipe on a
// CPU-only machine): same losses, grad norms and parameter stats as the CPU backend, and a save on
// webgpu (device buffers read to host at the save) resumed by a second webgpu job (host -> upload)
// continues exactly like the straight run. Two worker processes on webgpu (each its own Dawn
// device; on lavapipe both share the CPU adapter) under DDP, FSDP (ZeRO-3, prefetch) and Ulysses 2
// (fsdp2 sync, ddp async), their collectives staged through host memory (parallel/staging.ts),
// equal one webgpu process. (MoE plans on webgpu: moe_webgpu.test.ts.)
//
// Tolerance: 1e-4 vs cpu (f32 sums in a different order on the GPU, compounded over steps); 1e-5
// for 2 webgpu ranks vs 1 (the same kernels; only the gradient sums' grouping differs).
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { runJob } from "../../actors/coordinator.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import type { Config } from "../../configs/index.ts";
import { probeAdapter } from "../../kernels/webgpu/index.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { close, tinyTrainConfig } from "./actors_parity_setup.ts";

setDefaultTimeout(60_000);
const probe = await probeAdapter();
const dir = tempDir("webgpu-job");

function config(out: string, backend: "cpu" | "webgpu", train: object = {}, world = 1): Config {
  const c = tinyTrainConfig(dir, out, { world_size: world }, { save_hf_weights: false, ...train });
  return { ...c, kernels: { ...c.kernels, backend } };
}

async function run(c: Config, tag: string): Promise<MetricsLine[]> {
  const { logger, file } = fileLogger(c.train.output_dir!, tag);
  const code = await runJob(c, logger);
  if (code !== 0) throw new Error(`${tag}: exit ${code}; see ${file}`);
  return readMetrics(c.train.output_dir!) as unknown as MetricsLine[];
}

if (!probe.ok) {
  test(`webgpu: SKIPPED, no adapter: ${probe.reason}`, () => {
    console.warn(`webgpu: SKIPPED, no adapter: ${probe.reason}`);
  });
} else {
  test("world size 1 through runJob: webgpu losses, grad norms and param stats = cpu; save on webgpu, resume on webgpu", async () => {
    const cpu = await run(config(tempDir("webgpu-cpu"), "cpu", { max_steps: 6 }), "cpu");
    // webgpu: 3 steps with a save after step 3, then a second job resumes from it for steps 4-6
    const out = tempDir("webgpu-gpu");
    const first = await run(config(out, "webgpu", { max_steps: 3, save_steps: 3 }), "gpuA");
    expect(first.map((m) => m.step)).toEqual([1, 2, 3]);
    close(cpu.slice(0, 3).map((m) => m.loss), first.map((m) => m.loss), 1e-4, "webgpu vs cpu: losses");
    close(cpu.slice(0, 3).map((m) => m.grad_norm), first.map((m) => m.grad_norm), 1e-4, "webgpu vs cpu: grad norms");
    const resumed = (await run(config(out, "webgpu", { max_steps: 6, load_checkpoint_path: "auto" }), "gpuB")).slice(first.length);
    expect(resumed.map((m) => m.step)).toEqual([4, 5, 6]);
    close(cpu.slice(3).map((m) => m.loss), resumed.map((m) => m.loss), 1e-4, "webgpu resumed vs cpu: losses");
    close(cpu.at(-1)!.param_stats!, resumed.at(-1)!.param_stats!, 1e-4, "webgpu resumed vs cpu: parameter stats after 6 steps");
    expect(childPids()).toEqual([]);
  });

  describe("2 webgpu ranks = 1 webgpu process", () => {
    let one: MetricsLine[];
    beforeAll(async () => {
      one = await run(config(tempDir("webgpu-w1"), "webgpu", { max_steps: 3 }), "w1");
    });
    // fsdp: 2 steps and a save (shards read back from the devices), then a second job resumes
    // from it (shards uploaded) for step 3
    const cases: Array<[string, object, boolean]> = [
      ["ddp", { data_parallel_mode: "ddp" }, false],
      ["fsdp2 (ZeRO-3, forward prefetch), saved after step 2 and resumed", { data_parallel_mode: "fsdp2", enable_forward_prefetch: true }, true],
      // Ulysses' all-to-alls staged like the rest; at ulysses = world size its group is FSDP's
      // shard group too (one post order for both). Async: q/k/v on the wire during projections.
      ["ulysses 2 (fsdp2)", { data_parallel_mode: "fsdp2", ulysses_parallel_size: 2 }, false],
      ["ulysses 2 async (ddp)", { data_parallel_mode: "ddp", ulysses_parallel_size: 2, ulysses_async: true }, false],
    ];
    for (const [name, train, resume] of cases) {
      test(name, async () => {
        const out = tempDir("webgpu-w2"), tag = `w2-${name.split(" ")[0]}`;
        let two = await run(config(out, "webgpu", { max_steps: resume ? 2 : 3, save_steps: resume ? 2 : 0, ...train }, 2), tag);
        if (resume) two = [...two, ...(await run(config(out, "webgpu", { max_steps: 3, load_checkpoint_path: "auto", ...train }, 2), `${tag}-resumed`)).slice(two.length)];
        expect(two.map((m) => m.step)).toEqual([1, 2, 3]);
        close(one.map((m) => m.loss), two.map((m) => m.loss), 1e-5, `${name}: losses`);
        close(one.map((m) => m.grad_norm), two.map((m) => m.grad_norm), 1e-5, `${name}: grad norms`);
        close(one.at(-1)!.param_stats!, two.at(-1)!.param_stats!, 1e-5, `${name}: parameter stats after 3 steps`);
        expect(childPids()).toEqual([]);
      });
    }
  });
}
