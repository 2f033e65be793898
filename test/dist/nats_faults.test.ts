// Faults: a worker killed with -9 mid-step, a nats-server restart during a run, a worker with a
// wrong token, a worker with a stale epoch. Each checks the job's outcome, the message naming
// what went wrong, and that nothing is left running.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { runJob } from "../../actors/coordinator.ts";
import { startNatsServer } from "../../actors/embedded.ts";
import { PROTOCOL_VERSION, decodeToWorker, encode, subjects } from "../../actors/protocol.ts";
import { WORKER_MAIN, alive, childPids, fileLogger, kvClient, readMetrics, readRank, readState, textOf, toyConfig } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";

function spawnWorker(args: string[], token: string) {
  return Bun.spawn([process.execPath, WORKER_MAIN, ...args], { env: { ...process.env, VEOMNI_NATS_TOKEN: token }, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
}

test("kill -9 of a local worker mid-step: job stops at its exit (not a heartbeat deadline), error names the rank, nothing left", async () => {
  const out = tempDir("kill");
  const { logger, file } = fileLogger(out);
  // a heartbeat deadline past the test's timeout: only the worker's exit can stop the job in time
  const config = toyConfig(out, { train: { max_steps: 1000, micro_batch_size: 60 }, launch: { world_size: 2, dead_after_s: 600 } });
  let pids: number[] = [];
  const code = await runJob(config, logger, {
    runner: "toy",
    onStep: async (m, i) => {
      if (m.step !== 2) return;
      const { nc, kv } = await kvClient(i.natsUrl, i.token);
      pids = await Promise.all([0, 1].map(async (r) => (await readRank(kv, i.job, r))!.pid));
      await nc.close();
      // fire and forget: the coordinator sends step 3 right after this hook, so the kill most often
      // lands mid-step (the random moment of a kill, not a wait; the outcome is the same either way)
      setTimeout(() => process.kill(pids[1], "SIGKILL"), 20);
    },
  });
  expect(code).toBe(1);
  expect(readFileSync(file, "utf8")).toContain(`rank 1 (pid ${pids[1]}) was killed by SIGKILL before the job ended`);
  for (const p of pids) expect(alive(p)).toBe(false);
  expect(childPids()).toEqual([]);
}, 30_000);

test("nats-server restarted during a run: clients reconnect, the job finishes with every step", async () => {
  const out = tempDir("restart");
  const store = tempDir("restart-js");
  let server = await startNatsServer({ storeDir: store });
  const { port, token } = server;
  const { logger } = fileLogger(out);
  const steps = 40;
  const config = toyConfig(out, { train: { max_steps: steps, micro_batch_size: 30 }, launch: { world_size: 2, local_workers: 2, nats: server.url, nats_token: token, dead_after_s: 5 } });
  let restarted: Promise<void> = Promise.resolve();
  let job = "";
  const code = await runJob(config, logger, {
    runner: "toy",
    onStep: (m, i) => {
      job = i.job;
      if (m.step !== 3) return;
      // not awaited: step 4 starts while the server is down
      restarted = (async () => {
        server.proc.kill("SIGKILL");
        await server.proc.exited;
        server = await startNatsServer({ port, token, storeDir: store });
      })();
    },
  });
  await restarted;
  expect(code).toBe(0);
  expect(readMetrics(out).map((m) => m.step)).toEqual([...Array(steps).keys()].map((s) => s + 1));
  const { nc, kv } = await kvClient(server.url, token);
  expect(await readState(kv, job)).toMatchObject({ phase: "done", step: steps, error: null });
  await nc.close();
  await server.stop();
  expect(childPids()).toEqual([]);
}, 40_000);

test("a worker with a wrong token is refused by the server", async () => {
  const server = await startNatsServer();
  const w = spawnWorker(["--rank", "0", "--nats", server.url, "--job", "nojob"], "not-the-token");
  const [code, err] = await Promise.all([w.exited, textOf(w.stderr)]);
  await server.stop();
  expect(code).toBe(2);
  expect(err).toContain("refused the connection (authorization violation)");
}, 20_000);

test("a worker with a stale epoch, or claiming a local rank, is refused by the coordinator", async () => {
  const out = tempDir("epoch");
  const { logger } = fileLogger(out);
  const config = toyConfig(out, { train: { max_steps: 4 }, launch: { world_size: 1 } });
  const code = await runJob(config, logger, {
    runner: "toy",
    onStep: async (m, i) => {
      if (m.step !== 2) return;
      // a real worker process re-joining with an old generation number
      const w = spawnWorker(["--rank", "0", "--nats", i.natsUrl, "--job", i.job, "--epoch", "7"], i.token!);
      const [wc, err] = await Promise.all([w.exited, textOf(w.stderr)]);
      expect(wc).toBe(3);
      expect(err).toContain("stale epoch 7: the job is at epoch 1");
      // a client claiming rank 0 (held by the coordinator's own worker) with the current epoch
      const { nc } = await kvClient(i.natsUrl, i.token);
      const reg = { v: PROTOCOL_VERSION, kind: "register" as const, job: i.job, rank: 0, epoch: 1, host: "elsewhere", pid: 1, addr: "10.0.0.9:1" };
      const reply = decodeToWorker((await nc.request(subjects(i.job).register, encode(reg), { timeout: 2000 })).data);
      expect(reply).toMatchObject({ kind: "refused", rank: 0 });
      expect((reply as { reason: string }).reason).toContain("rank 0 is a local worker of the coordinator");
      await nc.close();
    },
  });
  expect(code).toBe(0); // the refused intruders did not disturb the job
  expect(childPids()).toEqual([]);
}, 30_000);
