// Checkpoint faults through the coordinator and workers: a clash with a committed checkpoint is
// refused before the first step (not after training, not once per restart), a damaged shard header
// stops the resume naming the file (never "step -1", never raw log lines), and a disk that fills up
// mid-run ends, after its restart, in one line naming the file, with nothing half-written left.
import { expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import { rankFileName } from "../../checkpoint/format.ts";
import { childPids, fileLogger, readMetrics } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

const stopped = (file: string) =>
  readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter((l) => String(l.msg).startsWith("job stopped:")).map((l) => String(l.msg));

test("resuming from an older checkpoint below a committed newer one is refused at start; a damaged header fails the resume by name", async () => {
  const dir = tempDir("clash");
  const out = tempDir("clash-out");
  const a = tinyTrainConfig(dir, out, { world_size: 1 }, { data_parallel_mode: "fsdp2", save_steps: 2, max_steps: 4, save_hf_weights: false });
  expect(await runJob(a, fileLogger(out, "first").logger)).toBe(0);
  expect(readMetrics(out).map((m) => m.step)).toEqual([1, 2, 3, 4]);

  // explicit older checkpoint: steps 3-4 would save global_step_4 again; restarts must not loop on it
  const older = join(out, "checkpoints", "global_step_2");
  const b = tinyTrainConfig(dir, out, { world_size: 1, max_restarts: 2 }, { data_parallel_mode: "fsdp2", save_steps: 2, max_steps: 4, save_hf_weights: false, load_checkpoint_path: older });
  const { logger, file } = fileLogger(out, "second");
  expect(await runJob(b, logger)).toBe(1);
  expect(stopped(file)).toEqual([
    `job stopped: train.output_dir ${out}: checkpoints/global_step_4 is already committed and this run (steps 3 to 4) would save it again; ` +
      "a commit is never overwritten: resume from the newest (train.load_checkpoint_path: auto) or use another train.output_dir",
  ]);
  expect(readFileSync(file, "utf8")).not.toContain("restarting");
  expect(readMetrics(out).map((m) => m.step)).toEqual([1, 2, 3, 4]); // no step was run

  // a flipped byte in the newest checkpoint's shard header: the resume stops naming the file
  const f = join(out, "checkpoints", "global_step_4", rankFileName("model", 0, 1));
  const bytes = readFileSync(f);
  bytes[bytes.indexOf(Buffer.from("veomni-ts-checkpoint"))] ^= 1;
  writeFileSync(f, bytes);
  const c = tinyTrainConfig(dir, out, { world_size: 1 }, { data_parallel_mode: "fsdp2", save_steps: 2, max_steps: 6, save_hf_weights: false, load_checkpoint_path: "auto" });
  const third = fileLogger(out, "third");
  expect(await runJob(c, third.logger)).toBe(1);
  const [headline] = stopped(third.file);
  expect(headline).toMatch(/^job stopped: rank 0 (failed while starting|\(pid \d+\) exited with code 1 before the job ended): .*global_step_4: rank 0 file model_e1_rank_00000\.safetensors is corrupted \(CRC-32 of the file/);
  expect(headline).not.toContain("step -1");
  expect(headline).not.toContain("{");
  expect(childPids()).toEqual([]);
}, 120_000);

const canMount = process.getuid?.() === 0 && (() => {
  const probe = tempDir("mount-probe");
  const ok = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe]).exitCode === 0;
  if (ok) Bun.spawnSync(["umount", probe]);
  return ok;
})();

test.skipIf(!canMount)("a disk that fills up mid-run: the save fails naming the file, the restart ends in one line, no temp folder left", async () => {
  const dir = tempDir("full");
  const out = tempDir("full-out");
  expect(Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", out]).exitCode).toBe(0);
  try {
    const logs = tempDir("full-logs");
    const { logger, file } = fileLogger(logs);
    const config = tinyTrainConfig(dir, out, { world_size: 2, max_restarts: 1 }, { data_parallel_mode: "fsdp2", save_steps: 2, max_steps: 6, save_hf_weights: false });
    const code = await runJob(config, logger, {
      workerEnv: { VEOMNI_LOG_LEVEL: "warn" },
      onStep: (m) => {
        // after step 2's save is commanded: fill the disk, so a save and then the restart meet it
        if (m.step === 3) Bun.spawnSync(["dd", "if=/dev/zero", `of=${join(out, "filler")}`, "bs=64k"]);
      },
    });
    expect(code).toBe(1);
    const log = readFileSync(file, "utf8");
    expect(log).toMatch(/restarting: rank [01] failed at step \d+: checkpoint save failed: .*writing .*global_step_4\/.*: ENOSPC: no space left on device/);
    const [headline] = stopped(file);
    expect(headline).toMatch(/^job stopped: model_assets: writing .*model_assets\.tmp-\d+\/config\.json: ENOSPC: no space left on device/);
    expect(headline.split("\n")).toHaveLength(1);
    expect(readdirSync(out).filter((n) => n.includes(".tmp-"))).toEqual([]);
    expect(existsSync(join(out, "checkpoints", "global_step_2", "metadata.json"))).toBe(true); // what was committed stays
  } finally {
    Bun.spawnSync(["umount", out]);
  }
  expect(childPids()).toEqual([]);
}, 120_000);

