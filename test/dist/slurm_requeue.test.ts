// The Slurm batch script (tools/deploy/slurm.sbatch, docs/deploy.md "Slurm") run as Slurm would run
// it, on one machine: its Slurm variables set, `srun` and `scontrol` replaced by stand-ins
// (test/harness/slurm: srun runs the step's tasks as local processes with SLURM_PROCID, scontrol
// records a requeue), everything else real: nats-server, the coordinator, the workers, the files.
//   run 0: a worker killed with -9 and launch.max_restarts 0: the job fails and the script requeues it;
//   run 1 (SLURM_RESTART_COUNT=1, as Slurm starts a requeued job): the script resumes the job from
//          its newest commit; then the "node" dies (every process of the allocation killed with -9);
//   run 2 (requeued by Slurm, --requeue): resumes again; USR1 (the time limit near): requeued, stopped;
//   run 3: resumes again; its coordinator killed with -9 once is resumed in place by the script,
//          adopting the workers; the job finishes.
// Every step once, the final parameters bitwise those of an uninterrupted run. What this cannot
// check (real Slurm's signals, requeue and node placement) is listed in docs/deploy.md.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { connect } from "@nats-io/transport-node";
import { existsSync, readFileSync, watch, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startNatsServer, type NatsServer } from "../../actors/embedded.ts";
import { COORD_ENTRY, ROOT, checkpointEpochs, childPids, kvClient, readRank, stateWhere, textOf, expectSameRun } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

const SCRIPT = join(ROOT, "tools/deploy/slurm.sbatch");
const FAKE_SLURM = join(ROOT, "test/harness/slurm");
const STEPS = 6;

let straightServer: NatsServer;
beforeAll(async () => {
  straightServer = await startNatsServer();
});
afterAll(async () => {
  await straightServer.stop();
  expect(childPids()).toEqual([]);
});

const data = tempDir("slurm-data");
const config = (out: string, launch: object) => tinyTrainConfig(data, out, { world_size: 2, dead_after_s: 20, ...launch }, { data_parallel_mode: "fsdp2", max_steps: STEPS, save_steps: 2 });

function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

/** Resolves once the batch script's nats-server takes connections (the client's first-connect
 *  retries); rejects if the script ends first. */
async function serverUp(url: string, token: string, proc: Subprocess): Promise<void> {
  const nc = connect({ servers: url, token, waitOnFirstConnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 100, name: "test-server-up" });
  const ended = proc.exited.then((c) => Promise.reject(new Error(`the batch script ended (${c}) before its nats-server took connections`)));
  ended.catch(() => {});
  await (await Promise.race([nc, ended])).close();
}

/** Waits until no live process is left in process group `pgid` (SIGKILL is not synchronous;
 *  zombies waiting to be reaped count as gone). A bounded poll: a death outside our children has
 *  no event to wait on. */
async function groupGone(pgid: number): Promise<void> {
  const live = () =>
    Bun.spawnSync(["ps", "-o", "pid=,stat=", "-g", String(pgid)]).stdout.toString().trim().split("\n").filter((l) => l.trim() && !/\sZ/.test(l));
  const t0 = Date.now();
  while (live().length) {
    if (Date.now() - t0 > 30_000) throw new Error(`processes of group ${pgid} still run 30 s after SIGKILL: ${live().join("; ")}`);
    await Bun.sleep(20);
  }
}

/** Resolves once `file` exists (a watch of its folder; no polling). */
async function fileAppears(file: string, proc: Subprocess): Promise<void> {
  const dir = join(file, "..");
  await new Promise<void>((resolve, reject) => {
    const w = watch(dir, () => {
      if (existsSync(file)) done();
    });
    const done = () => {
      w.close();
      resolve();
    };
    void proc.exited.then((c) => {
      w.close();
      reject(new Error(`the batch script ended (${c}) before ${file} appeared`));
    });
    if (existsSync(file)) done();
  });
}

test("docs/deploy.md shows tools/deploy/slurm.sbatch verbatim", () => {
  const doc = readFileSync(join(ROOT, "docs/deploy.md"), "utf8");
  const at = doc.indexOf("## Slurm");
  const block = /```bash\n([\s\S]*?)```/.exec(doc.slice(at))![1];
  expect(block).toBe(readFileSync(SCRIPT, "utf8"));
});

test("Slurm batch script: restarts exhausted, the node dead, the time limit near -> requeued and resumed; a killed coordinator resumed in place; every step once, bitwise equal", async () => {
  // the uninterrupted run (its own workers)
  const straight = tempDir("slurm-straight");
  const sp = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config(straight, { local_workers: 2, nats: straightServer.url, nats_token: straightServer.token, job_id: "slurm-straight" })), "train"], { env: testEnv(), stdout: "ignore", stderr: "pipe" });
  const spErr = textOf(sp.stderr);
  if ((await sp.exited) !== 0) throw new Error(`uninterrupted run: ${(await spErr).slice(-1500)}`);

  const out = tempDir("slurm-out");
  const cfgFile = join(tempDir("slurm-cfg"), "tiny.yaml");
  writeFileSync(cfgFile, JSON.stringify(config(out, {}))); // JSON is YAML
  const port = freePort();
  const token = "slurm-test-token";
  const log = join(out, "..", `${out.split("/").pop()}-scontrol.log`);
  const server = { url: `nats://127.0.0.1:${port}`, token };
  const job = "slurm-4242";
  const sbatch = (run: number) =>
    Bun.spawn(["setsid", "bash", SCRIPT], {
      env: testEnv({
        PATH: `${FAKE_SLURM}:${join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
        SLURM_SUBMIT_DIR: ROOT, SLURM_JOB_ID: "4242", SLURM_JOB_NODELIST: "node[1-2]", SLURM_NTASKS: "2",
        ...(run > 0 ? { SLURM_RESTART_COUNT: String(run) } : {}),
        VEOMNI_CONFIG: cfgFile, VEOMNI_OUTPUT_DIR: out, VEOMNI_NATS_PORT: String(port), VEOMNI_NATS_TOKEN: token, VEOMNI_MAX_RESTARTS: "0",
        FAKE_SLURM_LOG: log,
      }),
      stdin: "ignore", stdout: "ignore", stderr: "pipe",
    });
  const procs: Subprocess[] = [];
  try {
    // run 0: kill rank 1's worker at the commit of step 2; no restart left: failed, requeued
    const r0 = sbatch(0);
    procs.push(r0);
    const r0Err = textOf(r0.stderr);
    await fileAppears(join(out, "job.json"), r0);
    await serverUp(server.url, token, r0);
    await stateWhere(server, job, (st) => st.last_checkpoint === "checkpoints/global_step_2", r0, r0Err);
    const { nc, kv } = await kvClient(server.url, token);
    process.kill((await readRank(kv, job, 1))!.pid, "SIGKILL");
    await nc.close();
    const c0 = await r0.exited;
    const e0 = await r0Err;
    expect({ code: c0, tail: c0 === 1 ? "" : e0.slice(-2000) }).toEqual({ code: 1, tail: "" });
    expect(e0).toContain(`veomni-slurm[4242 run 0]: requeueing: the job failed (restarts exhausted or a fatal error, exit 1); the next run resumes ${job} from the newest commit in ${out}`);
    expect(readFileSync(log, "utf8")).toBe("requeue 4242\n");

    // run 1 (the requeued job): resumed from the newest commit; the node dies at the commit of step 4
    const r1 = sbatch(1);
    procs.push(r1);
    const r1Err = textOf(r1.stderr);
    await serverUp(server.url, token, r1);
    const st1 = await stateWhere(server, job, (st) => st.last_checkpoint === "checkpoints/global_step_4", r1, r1Err);
    expect(st1.epoch).toBe(2); // a fresh NATS store: the epoch carried on from OUT/job.json
    process.kill(-r1.pid, "SIGKILL"); // the whole allocation's processes (setsid: r1 leads the group)
    await r1.exited;
    await groupGone(r1.pid); // nats-server, coordinator, workers: nothing of run 1 goes on
    // from step 2's commit (or 4's, when the kill came after its save on a loaded machine)
    expect(await r1Err).toMatch(new RegExp(`resuming job ${job} under epoch 2 from ${join(out, "checkpoints/global_step_")}[24]:`));

    // run 2 (requeued by Slurm after the node failure): resumed again; the time limit comes near
    // (Slurm's USR1, --signal=B:USR1@120): the script requeues the job and stops it
    const r2 = sbatch(2);
    procs.push(r2);
    const r2Err = textOf(r2.stderr);
    await serverUp(server.url, token, r2);
    await stateWhere(server, job, (st) => st.epoch === 3 && st.phase === "running", r2, r2Err);
    process.kill(r2.pid, "SIGUSR1"); // the batch shell (setsid execs it: same pid)
    const [c2, e2] = await Promise.all([r2.exited, r2Err]);
    expect({ code: c2, tail: c2 === 0 ? "" : e2.slice(-2000) }).toEqual({ code: 0, tail: "" });
    expect(e2).toContain(`resuming job ${job} under epoch 3 from ${join(out, "checkpoints/global_step_4")}:`);
    expect(e2).toContain(`veomni-slurm[4242 run 2]: requeueing: the time limit is near; the next run resumes ${job}`);
    expect(readFileSync(out + "/job.json", "utf8")).toContain('"phase": "stopped"'); // recorded before NATS went
    expect(readFileSync(log, "utf8")).toBe("requeue 4242\nrequeue 4242\n"); // run 1 was requeued by Slurm

    // run 3: resumed; its coordinator killed with -9 once (resumed in place, adopting the workers); finishes
    const r3 = sbatch(3);
    procs.push(r3);
    const r3Err = textOf(r3.stderr);
    await serverUp(server.url, token, r3);
    const st3 = await stateWhere(server, job, (st) => st.epoch === 4 && st.phase === "running", r3, r3Err);
    process.kill(st3.coordinator.pid, "SIGKILL");
    const [c3, e3] = await Promise.all([r3.exited, r3Err]);
    if (c3 !== 0) throw new Error(`run 3 exit ${c3}: ${e3.slice(-2500)}`);
    expect(e3).toMatch(new RegExp(`resuming job ${job} under epoch 4 from ${join(out, "checkpoints/global_step_")}[46]:`));
    expect(e3).toMatch(/veomni-slurm\[4242 run 3\]: the coordinator ended with \d+; resuming slurm-4242 in place/);
    expect(e3).toContain(`adopting the running ranks of job ${job} (epoch 4) under epoch 5`);
    expect(e3).toContain(`veomni-slurm[4242 run 3]: job ${job} done`);

    expectSameRun(out, straight, STEPS);
    // each run under its own epoch, carried on through OUT/job.json while each run's NATS is new
    const ck = checkpointEpochs(out);
    expect(ck.map((c) => c.step)).toEqual([2, 4, 6]);
    expect(ck[0]).toMatchObject({ committed: 1, names: [1] });
    expect(ck[2].committed).toBeGreaterThanOrEqual(3); // after the node died
    for (const c of ck) {
      expect(c.unlisted).toEqual([]);
      expect(Math.max(...c.names)).toBeLessThanOrEqual(c.committed);
    }
  } finally {
    for (const p of procs) {
      try {
        process.kill(-p.pid, "SIGKILL");
      } catch {
        // the group is gone already
      }
    }
    await Promise.all(procs.map((p) => p.exited));
  }
}, 300_000);
