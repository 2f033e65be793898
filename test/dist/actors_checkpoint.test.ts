// Checkpoints through the coordinator and workers: saves commanded per step (save_steps) and at
// the end of every data epoch (save_epochs), each
// rank's durable report committed by the coordinator and recorded in KV, the final weights
// exported to Hugging Face format, and a second job resuming with load_checkpoint_path auto
// (FSDP save, DDP load: resharded) continuing with the very same losses.
import { expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import { keys, type JobState } from "../../actors/nats.ts";
import { childPids, fileLogger, kvClient, readMetrics, readRank, readState } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

test("save every 3 steps on 2 FSDP ranks, commit in KV, resume with auto on 2 DDP ranks: same losses", async () => {
  const dir = tempDir("ckpt");
  const out = tempDir("ckpt-out");
  const seen: Array<string | null> = [];
  const a = tinyTrainConfig(dir, out, { world_size: 2 }, { data_parallel_mode: "fsdp2", save_steps: 3 });
  const codeA = await runJob(a, fileLogger(out, "coordA").logger, {
    onStep: async (m, i) => {
      if (m.step !== 4) return;
      // step 3's save was written while step 4 ran; wait (KV events) for its commit record
      const { nc, kv } = await kvClient(i.natsUrl, i.token);
      const w = await kv.watch({ key: keys.state(i.job) });
      for await (const e of w) {
        const last = e.operation === "PUT" ? e.json<JobState>().last_checkpoint : null;
        if (last !== null) {
          seen.push(last);
          break;
        }
      }
      w.stop();
      await nc.close();
    },
  });
  expect(codeA).toBe(0);
  expect(seen).toEqual(["checkpoints/global_step_3"]);
  for (const s of [3, 5]) expect(existsSync(join(out, `checkpoints/global_step_${s}/metadata.json`))).toBe(true);
  expect(existsSync(join(out, "checkpoints/global_step_5/hf_ckpt/model.safetensors"))).toBe(true);
  const first = readMetrics(out);

  const b = tinyTrainConfig(dir, out, { world_size: 2 }, { data_parallel_mode: "ddp", load_checkpoint_path: "auto", max_steps: 7, save_hf_weights: false });
  // auto picks global_step_5; run steps 6-7; then compare with a straight 7-step run
  expect(await runJob(b, fileLogger(out, "coordB").logger)).toBe(0);
  const resumed = readMetrics(out).slice(first.length);
  expect(resumed.map((m) => m.step)).toEqual([6, 7]);

  const straightOut = tempDir("ckpt-straight");
  const c = tinyTrainConfig(dir, straightOut, { world_size: 2 }, { data_parallel_mode: "ddp", max_steps: 7, save_hf_weights: false });
  expect(await runJob(c, fileLogger(straightOut).logger)).toBe(0);
  const straight = readMetrics(straightOut);
  for (const [i, m] of resumed.entries()) expect(m.loss).toBeCloseTo(straight[5 + i].loss!, 5);
  expect(childPids()).toEqual([]);
}, 60_000);

test("save_epochs on 2 DDP ranks: a checkpoint at the end of every data epoch", async () => {
  const dir = tempDir("epochs");
  const out = tempDir("epochs-out");
  // 96 samples / global batch 4 = 24 steps an epoch; no max_steps, so epochs are counted
  const c = tinyTrainConfig(dir, out, { world_size: 2 }, {
    data_parallel_mode: "ddp", max_steps: null, num_train_epochs: 2, save_steps: 0, save_epochs: 1, save_hf_weights: false,
  });
  expect(await runJob(c, fileLogger(out).logger)).toBe(0);
  expect(readMetrics(out).length).toBe(48);
  expect(readdirSync(join(out, "checkpoints")).sort()).toEqual(["global_step_24", "global_step_48"]);
  for (const s of [24, 48]) expect(existsSync(join(out, `checkpoints/global_step_${s}/metadata.json`))).toBe(true);
  expect(childPids()).toEqual([]);
}, 60_000);

test("kill -9 of a rank with launch.max_restarts 1: new epoch resumes from the last commit, job completes", async () => {
  const dir = tempDir("restart");
  const out = tempDir("restart-out");
  const config = tinyTrainConfig(dir, out, { world_size: 2, max_restarts: 1 }, { data_parallel_mode: "fsdp2", save_steps: 2, max_steps: 8, save_hf_weights: false });
  let killed = 0;
  let finalState: JobState | null = null;
  const code = await runJob(config, fileLogger(out).logger, {
    onStep: async (m, i) => {
      const { nc, kv } = await kvClient(i.natsUrl, i.token);
      if (m.step === 5 && killed === 0) {
        // wait (KV events) until step 4's commit is recorded, then kill rank 1 before step 6
        const w = await kv.watch({ key: keys.state(i.job) });
        for await (const e of w) if (e.operation === "PUT" && e.json<JobState>().last_checkpoint === "checkpoints/global_step_4") break;
        w.stop();
        killed = (await readRank(kv, i.job, 1))!.pid;
        process.kill(killed, "SIGKILL");
      }
      if (m.step === 8) finalState = await readState(kv, i.job);
      await nc.close();
    },
  });
  expect(code).toBe(0);
  expect(killed).toBeGreaterThan(0);
  const steps = readMetrics(out);
  // steps 1-5 in epoch 1; the kill lands before step 6 ends; epoch 2 resumes after step 4 and its
  // lines replace the abandoned step 5: one line per step, the redone ones marked by their epoch
  expect(steps.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  expect(steps.map((m) => m.epoch)).toEqual([1, 1, 1, 1, 2, 2, 2, 2]);
  expect(finalState).toMatchObject({ epoch: 2, step: 8, phase: "running" });
  expect(existsSync(join(out, "checkpoints/global_step_8/metadata.json"))).toBe(true); // committed before the job ended
  expect(childPids()).toEqual([]);
}, 60_000);
