// Ranks from the launchers' environments: the parser's rules (order, --rank wins, bad values
// named), then real worker processes started the way srun / torchrun / mpirun / a Kubernetes
// indexed Job start them (no --rank, no --job) joining one job of 4 ranks over a real nats-server.
import { expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { launchRank } from "../../actors/launcher_env.ts";
import { keys } from "../../actors/nats.ts";
import { COORD_ENTRY, WORKER_MAIN, kvClient, readMetrics, readRank, textOf, natsServerForFile } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";

test("rank and world from each launcher's variables; --rank wins; the first launcher set decides", () => {
  expect(launchRank(undefined, { RANK: "3", WORLD_SIZE: "4" })).toEqual({ rank: 3, world: 4, source: "RANK" });
  expect(launchRank(undefined, { SLURM_PROCID: "1", SLURM_NTASKS: "2" })).toEqual({ rank: 1, world: 2, source: "SLURM_PROCID" });
  expect(launchRank(undefined, { OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "8" })).toEqual({ rank: 0, world: 8, source: "OMPI_COMM_WORLD_RANK" });
  expect(launchRank(undefined, { JOB_COMPLETION_INDEX: "5" })).toEqual({ rank: 5, world: null, source: "JOB_COMPLETION_INDEX" });
  // torchrun inside an srun allocation: RANK (per process) over SLURM_PROCID (per launcher task)
  expect(launchRank(undefined, { RANK: "6", WORLD_SIZE: "8", SLURM_PROCID: "1", SLURM_NTASKS: "2" })).toEqual({ rank: 6, world: 8, source: "RANK" });
  expect(launchRank("2", { RANK: "6", WORLD_SIZE: "8" })).toEqual({ rank: 2, world: null, source: "--rank" });
  expect(launchRank(undefined, { RANK: "1" })).toEqual({ rank: 1, world: null, source: "RANK" });
  expect(launchRank(undefined, { RANK: "" , SLURM_PROCID: "0" })!.source).toBe("SLURM_PROCID");
  expect(launchRank(undefined, {})).toBeNull();
});

test("malformed launcher values are one-line errors naming the variable", () => {
  expect(() => launchRank("x", {})).toThrow(`--rank="x": expected a non-negative integer`);
  expect(() => launchRank(undefined, { RANK: "-1" })).toThrow(`RANK="-1": expected a non-negative integer`);
  expect(() => launchRank(undefined, { SLURM_PROCID: "2", SLURM_NTASKS: "2" })).toThrow("SLURM_PROCID=2 is outside SLURM_NTASKS=2 (expected 0..1)");
  expect(() => launchRank(undefined, { OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "0" })).toThrow("OMPI_COMM_WORLD_RANK=0 is outside OMPI_COMM_WORLD_SIZE=0");
  expect(() => launchRank(undefined, { JOB_COMPLETION_INDEX: "1.5" })).toThrow(`JOB_COMPLETION_INDEX="1.5": expected a non-negative integer`);
});

const server = natsServerForFile();

/** A worker as a launcher starts it: only the launcher's variables (none of the others inherited). */
function launched(env: Record<string, string>, extra: string[] = []): Subprocess<"ignore", "ignore", "pipe"> {
  const base: Record<string, string> = { ...(process.env as Record<string, string>), VEOMNI_NATS_TOKEN: server.token, VEOMNI_NATS_URL: server.url };
  for (const k of ["RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "JOB_COMPLETION_INDEX"]) delete base[k];
  return Bun.spawn([process.execPath, WORKER_MAIN, ...extra], { env: { ...base, ...env }, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
}

test("4 workers, each started by a different launcher's environment, train one job", async () => {
  const out = tempDir("launch");
  const config = {
    train: { output_dir: out, lr: 0.5, max_steps: 3, micro_batch_size: 5 },
    launch: { nats: server.url, nats_token: server.token, local_workers: 0, world_size: 4, job_id: "launch4", heartbeat_s: 0.2, dead_after_s: 10 },
  };
  const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const coordErr = textOf(coord.stderr);
  const workers = [
    launched({ RANK: "0", WORLD_SIZE: "4" }), // torchrun
    launched({ SLURM_PROCID: "1", SLURM_NTASKS: "4" }), // srun
    launched({ OMPI_COMM_WORLD_RANK: "2", OMPI_COMM_WORLD_SIZE: "4" }), // mpirun
    launched({ JOB_COMPLETION_INDEX: "3" }), // Kubernetes indexed Job
  ];
  const [cc, ...wc] = await Promise.all([coord.exited, ...workers.map((w) => w.exited)]);
  if (cc !== 0) throw new Error(`coordinator exit ${cc}: ${(await coordErr).slice(-1500)}`);
  expect(wc).toEqual([0, 0, 0, 0]);
  expect(readMetrics(out).map((m) => m.step)).toEqual([1, 2, 3]);
  const { nc, kv } = await kvClient(server.url, server.token);
  for (let r = 0; r < 4; r++) expect(await readRank(kv, "launch4", r)).toMatchObject({ rank: r, status: "done", pid: workers[r].pid });
  await nc.close();
}, 30_000);

test("a launcher's world size that is not the job's is refused by name; no rank is a usage error", async () => {
  const out = tempDir("launch-bad");
  const config = {
    train: { output_dir: out, lr: 0.5, max_steps: 2, micro_batch_size: 5 },
    launch: { nats: server.url, nats_token: server.token, local_workers: 0, world_size: 2, job_id: "launch2", heartbeat_s: 0.2, dead_after_s: 10 },
  };
  const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  // the job record exists before the worker naming it starts (KV watch: the event, not a sleep)
  const { nc, kv } = await kvClient(server.url, server.token);
  const w = await kv.watch({ key: keys.state("launch2") });
  for await (const e of w) if (e.operation === "PUT") break;
  w.stop();
  await nc.close();
  const wrong = launched({ SLURM_PROCID: "1", SLURM_NTASKS: "3" }, ["--job", "launch2"]);
  const [wrongCode, wrongErr] = await Promise.all([wrong.exited, textOf(wrong.stderr)]);
  expect(wrongCode).toBe(1);
  expect(wrongErr).toContain("worker rank 1: the launcher's world size is 3 but job launch2 has launch.world_size = 2");
  const none = launched({});
  const [noneCode, noneErr] = await Promise.all([none.exited, textOf(none.stderr)]);
  expect(noneCode).toBe(2);
  expect(noneErr).toContain("--rank N is required (or a launcher's RANK, SLURM_PROCID, OMPI_COMM_WORLD_RANK, JOB_COMPLETION_INDEX in the environment)");
  const bad = launched({ RANK: "2", WORLD_SIZE: "2" });
  const [badCode, badErr] = await Promise.all([bad.exited, textOf(bad.stderr)]);
  expect(badCode).toBe(2);
  expect(badErr).toContain("RANK=2 is outside WORLD_SIZE=2 (expected 0..1)");
  // the right pair still runs the job (--rank wins over a stale RANK in the environment)
  const ok = [launched({ RANK: "0", WORLD_SIZE: "2" }), launched({ RANK: "0", WORLD_SIZE: "2" }, ["--rank", "1"])];
  const [cc, ...wc] = await Promise.all([coord.exited, ...ok.map((w) => w.exited)]);
  expect({ cc, wc }).toEqual({ cc: 0, wc: [0, 0] });
}, 30_000);
