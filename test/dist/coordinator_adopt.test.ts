// The coordinator is not a single point of failure: workers started with `bun run worker` (not
// the coordinator's children) outlive a coordinator killed with -9, keep their state and wait;
// `bun run coordinator --resume JOB` adopts them under the next epoch without restarting them,
// and the job ends with every step once and parameters bitwise those of an uninterrupted run.
// Workers nobody adopts leave after launch.coordinator_grace_s, not before; ranks that cannot
// be adopted (one of them dead) are restarted from the newest commit instead.
import { expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { join } from "node:path";
import { hostname } from "node:os";
import { planAdoption, type Adopted } from "../../actors/adopt.ts";
import type { JobState } from "../../actors/nats.ts";
import { COORD_ENTRY, JOBS, ROOT, WORKER_MAIN, alive, checkpointEpochs, kvClient, stateWhere as harnessStateWhere, readMetrics, readRank, readState, textOf, toyConfig, natsServerForFile, expectSameRun } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

const COORD_MAIN = join(ROOT, "actors/coordinator_main.ts");

const server = natsServerForFile();

function spawn(args: string[]): Subprocess<"ignore", "ignore", "pipe"> {
  return Bun.spawn([process.execPath, ...args], { env: { ...(process.env as Record<string, string>), VEOMNI_NATS_TOKEN: server.token }, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
}

/** `bun run worker` on its host: no --exit-with-parent, so it does not end with the coordinator. */
const worker = (rank: number, job: string) => spawn([WORKER_MAIN, "--rank", String(rank), "--nats", server.url, "--job", job]);

const stateWhere = (job: string, pred: (st: JobState) => boolean, proc: Subprocess<"ignore", "ignore", "pipe">, err: Promise<string>) => harnessStateWhere(server, job, pred, proc, err);

/**
 * The checkpoints of a job taken over under epoch `last`: every commit's files are exactly those it
 * lists, named with epochs no newer than the commit's; the last (saved after the
 * takeover) is named and committed under `last`; the first two under epoch 1. A save in flight at
 * the takeover keeps the names of the epoch each rank had when it began it.
 */
function epochsConsistent(out: string, last: number): void {
  const ck = checkpointEpochs(out);
  expect(ck.map((c) => c.step)).toEqual([2, 4, 6, 8]);
  for (const c of ck) {
    expect({ step: c.step, unlisted: c.unlisted }).toEqual({ step: c.step, unlisted: [] });
    expect(c.names.length).toBeGreaterThan(0);
    expect(Math.max(...c.names)).toBeLessThanOrEqual(c.committed);
  }
  expect(ck.slice(0, 2).map((c) => [c.committed, ...c.names])).toEqual([[1, 1], [1, 1]]);
  expect(ck[3]).toMatchObject({ committed: last, names: [last] });
}

const adopted = (rank: number, lastDone: number, running = -1, firstStep = 0): Adopted => ({
  v: 1, kind: "adopted", job: "j", rank, epoch: 2, from: 1, host: "h", pid: 1, lastDone, running, firstStep, totalSteps: 10 - rank, canSave: true, saves: [],
});

test("planAdoption: the step to re-issue from the positions one coordinator can leave; anything else is refused", () => {
  // all finished step 4: re-issue 4 (answered from the cached reports), its line is the first to write
  expect(planAdoption([adopted(0, 4), adopted(1, 4)], 2)).toEqual({ start: 4, total: 9, canSave: true });
  // step 5 commanded: one rank computes it, one finished it, one has not seen the command yet
  expect(planAdoption([adopted(0, 4, 5), adopted(1, 5), adopted(2, 4)], 3).start).toBe(5);
  // nothing run yet in these processes (resumed at step 6): the first step
  expect(planAdoption([adopted(0, 5, -1, 6), adopted(1, 5, -1, 6)], 2).start).toBe(6);
  expect(() => planAdoption([adopted(0, 4)], 2)).toThrow("rank(s) 1 did not answer the adopt command");
  expect(() => planAdoption([adopted(0, 2), adopted(1, 4)], 2)).toThrow("the ranks' positions are apart (rank 0: finished step 2; rank 1: finished step 4)");
  expect(() => planAdoption([adopted(0, 4, 5), adopted(1, 6)], 2)).toThrow("positions are apart");
});

const data = tempDir("adopt-data");
const config = (out: string, job: string, launch: object) =>
  tinyTrainConfig(data, out, { world_size: 2, nats: server.url, nats_token: server.token, job_id: job, dead_after_s: 20, coordinator_grace_s: 120, ...launch }, {
    data_parallel_mode: "fsdp2", max_steps: 8, save_steps: 2,
  });
/** The uninterrupted run both takeovers are compared with (its workers the coordinator's own). */
let straightRun: Promise<string> | null = null;
function straightOut(): Promise<string> {
  straightRun ??= (async () => {
    const out = tempDir("adopt-straight");
    const straight = spawn([COORD_ENTRY, JSON.stringify(config(out, "adopt-straight", { local_workers: 2 })), "train"]);
    const err = textOf(straight.stderr);
    if ((await straight.exited) !== 0) throw new Error(`uninterrupted run: ${(await err).slice(-1500)}`);
    return out;
  })();
  return straightRun;
}

test("coordinator killed with -9, workers of `bun run worker` adopted by --resume: no restart, every step once, bitwise equal", async () => {
  const straight = await straightOut();

  const out = tempDir("adopt-out");
  const first = spawn([COORD_ENTRY, JSON.stringify(config(out, "adopt1", { local_workers: 0 })), "train"]);
  const firstErr = textOf(first.stderr);
  const workers = [worker(0, "adopt1"), worker(1, "adopt1")];
  const workerErr = workers.map((w) => textOf(w.stderr));
  let resumed: Subprocess<"ignore", "ignore", "pipe"> | null = null;
  try {
    // step 5 done after the commit of step 4: a commit to keep and work past it not to redo
    await stateWhere("adopt1", (st) => st.last_checkpoint === "checkpoints/global_step_4" && st.step >= 5, first, firstErr);
    first.kill("SIGKILL");
    await first.exited;
    for (const w of workers) expect(alive(w.pid)).toBe(true); // not children of the coordinator

    resumed = spawn([COORD_MAIN, "--resume", "adopt1", "--launch.nats", server.url]);
    const resumedErr = textOf(resumed.stderr);
    const code = await resumed.exited;
    const log = await resumedErr;
    if (code !== 0) throw new Error(`resumed coordinator exit ${code}: ${log.slice(-2000)}`);
    expect(log).toContain("adopting the running ranks of job adopt1 (epoch 1) under epoch 2");
    expect(log).toMatch(/adopted 2 live ranks of epoch 1: sequencing goes on at step \d/);
    // the same processes finished the job (never restarted) and exited on its end
    expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0]);
    expect((await workerErr[0])).toContain("adopted by a new coordinator under epoch 2");

    const { nc, kv } = await kvClient(server.url, server.token);
    expect(await readState(kv, "adopt1")).toMatchObject({ phase: "done", step: 8, epoch: 2, error: null, last_checkpoint: "checkpoints/global_step_8" });
    expect((await readState(kv, "adopt1"))!.adopt_from).toBeUndefined();
    for (let r = 0; r < 2; r++) expect(await readRank(kv, "adopt1", r)).toMatchObject({ pid: workers[r].pid, epoch: 2, status: "done", step: 8 });
    await nc.close();
    expectSameRun(out, straight, 8);
    expect(readMetrics(out).some((m) => m.epoch === 2)).toBe(true);
    epochsConsistent(out, 2);
  } finally {
    first.kill("SIGKILL");
    resumed?.kill("SIGKILL");
    for (const w of workers) w.kill("SIGKILL");
    await Promise.all(workers.map((w) => w.exited));
  }
}, 180_000);

test("a rank that does not answer the adopt command: --resume restarts every rank from the newest commit under epoch 3, bitwise equal", async () => {
  const straight = await straightOut();
  const out = tempDir("adopt-fail-out");
  const cfg = config(out, "adopt2", { local_workers: 0, dead_after_s: 8 });
  const first = spawn([COORD_ENTRY, JSON.stringify(cfg), "train"]);
  const firstErr = textOf(first.stderr);
  // the launcher: a rank's worker is started again when it ends before the job did
  const workers: Array<Subprocess<"ignore", "ignore", "pipe">> = [];
  const starts = [0, 0];
  let done = false;
  const launch = (r: number) => {
    starts[r]++;
    const w = (workers[r] = worker(r, "adopt2"));
    void w.exited.then((code) => void (!done && code !== 0 && launch(r)));
  };
  launch(0);
  launch(1);
  let resumed: Subprocess<"ignore", "ignore", "pipe"> | null = null;
  try {
    await stateWhere("adopt2", (st) => st.last_checkpoint === "checkpoints/global_step_4" && st.step >= 5, first, firstErr);
    first.kill("SIGKILL");
    await first.exited;
    workers[1].kill("SIGSTOP"); // alive, its record fresh: adoptable by the records, but it cannot answer
    resumed = spawn([COORD_MAIN, "--resume", "adopt2", "--launch.nats", server.url]);
    const resumedErr = textOf(resumed.stderr);
    const code = await resumed.exited;
    done = true;
    const log = await resumedErr;
    if (code !== 0) throw new Error(`resumed coordinator exit ${code}: ${log.slice(-2000)}`);
    expect(log).toContain("adopting the running ranks of job adopt2 (epoch 1) under epoch 2");
    expect(log).toContain("adoption failed: rank(s) 1 did not answer the adopt command");
    expect(log).toMatch(/resuming job adopt2 under epoch 3 from \S+global_step_\d+: adoption failed/);
    expect(starts).toEqual([2, 2]); // both restarted once (the stale ones stopped by the new coordinator)
    const { nc, kv } = await kvClient(server.url, server.token);
    expect(await readState(kv, "adopt2")).toMatchObject({ phase: "done", step: 8, epoch: 3, error: null });
    await nc.close();
    expectSameRun(out, straight, 8);
    epochsConsistent(out, 3);
  } finally {
    done = true;
    first.kill("SIGKILL");
    resumed?.kill("SIGKILL");
    for (const w of workers) w.kill("SIGKILL");
    await Promise.all(workers.map((w) => w.exited));
  }
}, 240_000);

test("unadopted workers wait past dead_after_s and leave at launch.coordinator_grace_s (exit 5), not before", async () => {
  const out = tempDir("adopt-grace");
  const config = toyConfig(out, {
    train: { max_steps: 100_000, micro_batch_size: 20 },
    launch: { world_size: 2, local_workers: 0, nats: server.url, nats_token: server.token, job_id: "grace1", heartbeat_s: 0.2, dead_after_s: 1, coordinator_grace_s: 4 },
  });
  const coord = spawn([COORD_ENTRY, JSON.stringify(config), "toy"]);
  const coordErr = textOf(coord.stderr);
  const workers = [worker(0, "grace1"), worker(1, "grace1")];
  const errs = workers.map((w) => textOf(w.stderr));
  try {
    await stateWhere("grace1", (st) => st.phase === "running" && st.step >= 2, coord, coordErr);
    coord.kill("SIGKILL");
    await coord.exited;
    const killedAt = Date.now();
    // meanwhile the job is not marked failed: its ranks heartbeat, waiting to be adopted
    const jobs = Bun.spawn([process.execPath, JOBS, "grace1", "--nats", server.url], { env: { ...(process.env as Record<string, string>), VEOMNI_NATS_TOKEN: server.token }, stdout: "pipe", stderr: "ignore" });
    const [jc, jt] = await Promise.all([jobs.exited, new Response(jobs.stdout).text()]);
    expect(jc).toBe(0);
    expect(jt).toContain("grace1  running");
    expect(jt).toContain(`coordinator pid ${coord.pid} on ${hostname()} is gone (killed?) and never recorded an end; its ranks wait for: bun run coordinator --resume grace1`);
    expect(await Promise.all(workers.map((w) => w.exited))).toEqual([5, 5]);
    // a lower bound whatever the machine's load: never before the grace (counted from the
    // coordinator's last touch of the record, at most one touch interval, 0.5 s, before the kill)
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(3000);
    for (const e of errs) {
      const text = await e;
      expect(text).toContain("keeping this rank's state for up to launch.coordinator_grace_s = 4 s: bun run coordinator --resume grace1 adopts it");
      expect(text).toContain("(launch.coordinator_grace_s = 4); nobody adopted this rank; exiting");
    }
  } finally {
    for (const w of workers) w.kill("SIGKILL");
  }
}, 60_000);
