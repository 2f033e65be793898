// metrics.jsonl and the output folder across runs: a fresh run into a folder holding an earlier
// run is refused (or starts it over with train.overwrite_output_dir), a restart's redone steps
// replace the abandoned lines (marked by epoch), a resume continues the file, a torn line goes.
import { expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import { MetricsSink, type MetricsLine } from "../../actors/metrics.ts";
import { childPids, fileLogger, kvClient, readMetrics, readRank, toyConfig } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";

test("a fresh run into a folder with an earlier run is refused before anything starts; overwrite_output_dir starts it over", async () => {
  const out = tempDir("rerun");
  expect(await runJob(toyConfig(out, { train: { max_steps: 3 }, launch: { world_size: 1 } }), fileLogger(out).logger, { runner: "toy" })).toBe(0);
  const before = readFileSync(join(out, "metrics.jsonl"), "utf8");
  mkdirSync(join(out, "checkpoints", "global_step_2"), { recursive: true });
  const again = toyConfig(out, { train: { max_steps: 4 }, launch: { world_size: 1 } });
  await expect(runJob(again, fileLogger(out).logger, { runner: "toy" })).rejects.toThrow(
    `train.output_dir ${out} holds an earlier run (metrics.jsonl, checkpoints/global_step_2); resume it with --train.load_checkpoint_path auto, start over with --train.overwrite_output_dir true, or choose another folder`,
  );
  expect(readFileSync(join(out, "metrics.jsonl"), "utf8")).toBe(before);
  const over = toyConfig(out, { train: { max_steps: 4, overwrite_output_dir: true }, launch: { world_size: 1 } });
  expect(await runJob(over, fileLogger(out).logger, { runner: "toy" })).toBe(0);
  expect(readMetrics(out).map((m) => m.step)).toEqual([1, 2, 3, 4]);
  expect(childPids()).toEqual([]);
}, 60_000);

test("a restart redoes steps: their lines replace the abandoned ones, one line per step, marked by epoch", async () => {
  const out = tempDir("redo");
  const config = toyConfig(out, { train: { max_steps: 6, micro_batch_size: 20 }, launch: { world_size: 2, max_restarts: 1 } });
  let killed = false;
  const code = await runJob(config, fileLogger(out).logger, {
    runner: "toy",
    onStep: async (m, i) => {
      if (m.step !== 3 || killed) return;
      killed = true;
      const { nc, kv } = await kvClient(i.natsUrl, i.token);
      const pid = (await readRank(kv, i.job, 1))!.pid;
      await nc.close();
      process.kill(pid, "SIGKILL");
    },
  });
  expect(code).toBe(0);
  const lines = readMetrics(out); // the toy runner saves nothing: the restart redoes every step
  expect(lines.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
  expect(lines.map((m) => m.epoch)).toEqual([2, 2, 2, 2, 2, 2]);
  expect(childPids()).toEqual([]);
}, 60_000);

test("MetricsSink from step 4 keeps steps 1-4 (a torn last line dropped) and continues", () => {
  const out = tempDir("sink");
  const line = (step: number) => JSON.stringify({ step, loss: step, epoch: 1 });
  writeFileSync(join(out, "metrics.jsonl"), [1, 2, 3, 4, 5, 6].map(line).join("\n") + '\n{"step": 7, "lo');
  const sink = new MetricsSink(out, { startStep: 4, epoch: 2 });
  sink.write({ step: 5, loss: 0.5, grad_norm: 0, lr: 0, tokens: 1, valid_tokens: 1, tokens_per_s: 1, mfu: null, peak_rss_mb: 1, step_time_s: 1 } as MetricsLine);
  expect(readMetrics(out).map((m) => [m.step, m.epoch])).toEqual([[1, 1], [2, 1], [3, 1], [4, 1], [5, 2]]);
});
