// The embedded default end to end: runJob starts its own nats-server and local workers; a NATS
// client reads the KV job record while the job runs and sees its final state; afterwards every
// process (workers, nats-server) is gone.
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runJob, type JobInfo } from "../../actors/coordinator.ts";
import { keys, type JobState } from "../../actors/nats.ts";
import { JOBS, alive, childPids, textOf, fileLogger, kvClient, readMetrics, readRank, readState, toyConfig } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";

test("embedded default: job runs, KV readable during and at the end, nothing left running", async () => {
  const out = tempDir("emb");
  const { logger } = fileLogger(out);
  const config = toyConfig(out, { launch: { world_size: 2 } });
  let info: JobInfo | null = null;
  let client: Awaited<ReturnType<typeof kvClient>> | null = null;
  const phases: string[] = [];
  const workerPids: number[] = [];
  let serverPid = 0;
  let watching: Promise<void> = Promise.resolve();
  const startedMs = Date.now();

  const code = await runJob(config, logger, {
    runner: "toy",
    onStarted: async (i) => {
      info = i;
      client = await kvClient(i.natsUrl, i.token);
      const w = await client.kv.watch({ key: keys.state(i.job) });
      // the watch follows every state write until the embedded server goes away
      watching = (async () => {
        for await (const e of w) if (e.operation === "PUT") phases.push(e.json<JobState>().phase);
      })().catch(() => {});
      const varz = childPids();
      serverPid = varz[0];
    },
    onStep: async (m, i) => {
      if (m.step !== 3) return;
      const st = await readState(client!.kv, i.job);
      expect(st).toMatchObject({ job: i.job, phase: "running", step: 3, world_size: 2, epoch: 1, max_steps: 5 });
      expect(st!.loss).toBeCloseTo(m.loss, 12);
      for (const r of [0, 1]) {
        const rec = await readRank(client!.kv, i.job, r);
        expect(rec).toMatchObject({ rank: r, epoch: 1, status: "running" });
        expect(alive(rec!.pid)).toBe(true);
        expect(rec!.heartbeat_ms).toBeGreaterThanOrEqual(startedMs); // a heartbeat of this run (no freshness bound: a loaded host lags)
        workerPids.push(rec!.pid);
      }
      const cfg = (await client!.kv.get(keys.config(i.job)))!.json<{ launch: { world_size: number } }>();
      expect(cfg.launch.world_size).toBe(2);
      // `bun run jobs --dir OUTPUT_DIR` finds the embedded server through output_dir/.nats
      const jobs = Bun.spawn([process.execPath, JOBS, i.job, "--dir", out], { stdout: "pipe", stderr: "pipe" });
      const [jc, text] = await Promise.all([jobs.exited, textOf(jobs.stdout)]);
      expect(jc).toBe(0);
      expect(text).toContain(`${i.job}  running  step 3/5`);
      expect(text).toContain("rank 1  running  step 3");
    },
  });
  expect(code).toBe(0);
  await client!.nc.close().catch(() => {}); // (it would reconnect forever to the stopped server)
  await watching;
  expect(info).not.toBeNull();
  expect(phases[0]).toBe("rendezvous");
  expect(phases).toContain("running");
  expect(phases.at(-1)).toBe("done");
  const metrics = readMetrics(out);
  expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
  for (const k of ["loss", "grad_norm", "lr", "tokens", "tokens_per_s", "mfu", "peak_rss_mb", "peak_rss_mb_ranks"]) expect(metrics[0]).toHaveProperty(k);
  expect(metrics[4].loss!).toBeLessThan(metrics[0].loss!); // the toy fit converges
  expect(workerPids).toHaveLength(2);
  expect(serverPid).toBeGreaterThan(0);
  for (const p of [...workerPids, serverPid]) expect(alive(p)).toBe(false);
  expect(childPids()).toEqual([]);
  expect(existsSync(join(out, ".nats"))).toBe(false);
}, 30_000);
