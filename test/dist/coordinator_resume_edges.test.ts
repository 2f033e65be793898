// The coordinator-resume path at its edges (docs/deploy.md "When the coordinator dies"):
// - the coordinator killed with -9 while an async checkpoint is being committed (every rank's
//   files durable, metadata.json not written), with workers it adopts and with workers that died
//   with it; the resumed job commits that step once, under names of one epoch per rank;
// - killed twice in a row: the resumed coordinator killed in the middle of its adoption, and
//   a second --resume taking over from it;
// - --resume of a job that is done, or that this output_dir never ran: one line naming the job.
// Each takeover ends with every step once and the final parameters bitwise those of an
// uninterrupted run. Real nats-server, real processes; the kill moments are found by watching the
// job's NATS subjects and KV record, never by sleeping.
import { expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectNats } from "../../actors/nats.ts";
import { pidAlive } from "../../actors/orphans.ts";
import { decodeToCoordinator, decodeToWorker, subjects } from "../../actors/protocol.ts";
import { COORD_ENTRY, ROOT, WORKER_MAIN, checkpointEpochs, kvClient, readRank, readState, stateWhere, textOf, natsServerForFile, expectSameRun } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

const COORD_MAIN = join(ROOT, "actors/coordinator_main.ts");

const server = natsServerForFile();

type Proc = Subprocess<"ignore", "ignore", "pipe">;
function spawn(args: string[]): Proc {
  return Bun.spawn([process.execPath, ...args], { env: testEnv({ VEOMNI_NATS_TOKEN: server.token }), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
}
const resume = (job: string, ...more: string[]) => spawn([COORD_MAIN, "--resume", job, "--launch.nats", server.url, ...more]);

/** A launcher (srun, an indexed Job): `bun run worker --rank r --job JOB`, started again whenever it
 *  ends before `stop()` with a code other than 0. */
function launcher(job: string, world: number) {
  const procs: Proc[] = [];
  const starts = Array(world).fill(0);
  let stopped = false;
  const launch = (r: number) => {
    starts[r]++;
    const w = (procs[r] = spawn([WORKER_MAIN, "--rank", String(r), "--nats", server.url, "--job", job]));
    void w.exited.then((code) => void (!stopped && code !== 0 && launch(r)));
  };
  for (let r = 0; r < world; r++) launch(r);
  return {
    starts,
    procs,
    async stop() {
      stopped = true;
      for (const p of procs) p.kill("SIGKILL");
      await Promise.all(procs.map((p) => p.exited));
    },
  };
}

const data = tempDir("edges-data");
const STEPS = 6;
const config = (out: string, job: string, localWorkers: number) =>
  tinyTrainConfig(data, out, { world_size: 2, local_workers: localWorkers, nats: server.url, nats_token: server.token, job_id: job, dead_after_s: 20, coordinator_grace_s: 120 }, {
    data_parallel_mode: "fsdp2", max_steps: STEPS, save_steps: 2,
  });

let straightRun: Promise<string> | null = null;
/** The uninterrupted run every takeover is compared with (job "edges-straight"). */
function straightOut(): Promise<string> {
  straightRun ??= (async () => {
    const out = tempDir("edges-straight");
    const p = spawn([COORD_ENTRY, JSON.stringify(config(out, "edges-straight", 2)), "train"]);
    const err = textOf(p.stderr);
    if ((await p.exited) !== 0) throw new Error(`uninterrupted run: ${(await err).slice(-1500)}`);
    return out;
  })();
  return straightRun;
}

/** Every step once, the same losses and grad norms, the same exported bytes as the straight run;
 *  each commit's files exactly those it lists, named with epochs no newer than its own. */
async function sameAsStraight(out: string): Promise<void> {
  const straight = await straightOut();
  expectSameRun(out, straight, STEPS);
  const ck = checkpointEpochs(out);
  expect(ck.map((c) => c.step)).toEqual([2, 4, 6]);
  for (const c of ck) {
    expect({ step: c.step, unlisted: c.unlisted }).toEqual({ step: c.step, unlisted: [] });
    expect(Math.max(...c.names)).toBeLessThanOrEqual(c.committed);
  }
}

/** Waits until the processes in the job's rank records are gone (a bounded poll of /proc: a death
 *  has no event to wait on from outside the parent). */
async function rankProcessesGone(job: string, world: number): Promise<void> {
  const { nc, kv } = await kvClient(server.url, server.token);
  const pids = await Promise.all([...Array(world).keys()].map(async (r) => (await readRank(kv, job, r))!.pid));
  await nc.close();
  const t0 = Date.now();
  while (pids.some(pidAlive)) {
    if (Date.now() - t0 > 30_000) throw new Error(`rank processes ${pids.filter(pidAlive).join(", ")} of ${job} still run 30 s after their coordinator died`);
    await Bun.sleep(20);
  }
}

/**
 * Freezes `coord` (SIGSTOP) the moment it commands the step whose save is `saveStep`, waits until
 * every rank reported that save durable, checks nothing committed it, and kills the coordinator
 * with -9: it dies with the save's files written and its metadata.json not. (The ranks need a
 * whole step and the write after the command; the freeze lands within microseconds of it.)
 */
async function killWhileCommitting(coord: Proc, job: string, saveStep: number, out: string, world: number, leaveFrozen = false): Promise<void> {
  const nc = await connectNats({ url: server.url, token: server.token, name: "test-kill-committing" });
  try {
    let frozen!: () => void;
    const isFrozen = new Promise<void>((r) => (frozen = r));
    let durable!: () => void;
    const allDurable = new Promise<void>((r) => (durable = r));
    const reported = new Set<number>();
    nc.subscribe(subjects(job).cmd, {
      callback: (_e, m) => {
        const c = decodeToWorker(m.data);
        if (c.kind === "step" && c.save && c.step + 1 === saveStep && !reported.size) {
          coord.kill("SIGSTOP");
          frozen();
        }
      },
    });
    nc.subscribe(subjects(job).report, {
      callback: (_e, m) => {
        const r = decodeToCoordinator(m.data);
        if (r.kind === "ckpt_done" && r.step === saveStep) reported.add(r.rank);
        if (reported.size === world) durable();
      },
    });
    await nc.flush();
    const ended = coord.exited.then((c) => Promise.reject(new Error(`the coordinator ended (${c}) before the save of step ${saveStep}`)));
    ended.catch(() => {});
    await Promise.race([isFrozen, ended]);
    await allDurable;
  } finally {
    await nc.close();
  }
  const meta = join(out, `checkpoints/global_step_${saveStep}/metadata.json`);
  if (existsSync(meta)) throw new Error(`${meta} was committed before the coordinator was frozen: the kill missed the commit window`);
  if (leaveFrozen) return;
  coord.kill("SIGKILL");
  await coord.exited;
}

test("--resume of a job that is done, or of one this output_dir and server never ran: one line naming the job, nothing started", async () => {
  const straight = await straightOut();
  const done = resume("edges-straight");
  const [c1, e1] = await Promise.all([done.exited, textOf(done.stderr)]);
  expect(c1).toBe(2);
  // (the line before it, if any, is the configuration's warnings: train.use_wandb)
  expect(e1.trim().split("\n").at(-1)).toBe(
    `veomni-ts coordinator: --resume edges-straight: job edges-straight is done (step 6 of 6, last checkpoint checkpoints/global_step_6; record in KV bucket veomni_jobs at ${server.url}): ` +
      "nothing to resume; expected a job whose coordinator died or that failed or stopped before its end (to train it further: a new job with --train.load_checkpoint_path auto and a larger --train.max_steps)",
  );
  // another job's output_dir (its configuration found there, since the server has no record of "ghost")
  writeFileSync(join(straight, "veomni_cli.yaml"), JSON.stringify(config(straight, "edges-straight", 2))); // JSON is YAML
  const ghost = resume("ghost", "--train.output_dir", straight);
  const [c2, e2] = await Promise.all([ghost.exited, textOf(ghost.stderr)]);
  expect(c2).toBe(2);
  expect(e2.trim().split("\n").at(-1)).toBe(
    `veomni-ts coordinator: --resume ghost: no record of job ghost (none in KV bucket veomni_jobs at ${server.url}; ${join(straight, "job.json")} is the record of job edges-straight): ` +
      "expected the id of a job that ran with this train.output_dir (or on this NATS server), whose coordinator died before its end",
  );
  const { nc, kv } = await kvClient(server.url, server.token);
  expect(await readState(kv, "ghost")).toBeNull(); // nothing was started
  await nc.close();
}, 120_000);

test("killed -9 while a checkpoint is being committed, its workers adopted: the save is committed once, every step once, bitwise equal", async () => {
  const out = tempDir("edges-commit-adopt");
  const first = spawn([COORD_ENTRY, JSON.stringify(config(out, "edges1", 0)), "train"]);
  const firstErr = textOf(first.stderr);
  const workers = launcher("edges1", 2);
  let resumed: Proc | null = null;
  try {
    await killWhileCommitting(first, "edges1", 4, out, 2).catch(async (e) => {
      throw new Error(`${(e as Error).message}: ${(await firstErr).slice(-1500)}`);
    });
    resumed = resume("edges1");
    const [code, log] = await Promise.all([resumed.exited, textOf(resumed.stderr)]);
    if (code !== 0) throw new Error(`resumed coordinator exit ${code}: ${log.slice(-2000)}`);
    expect(log).toContain("adopting the running ranks of job edges1 (epoch 1) under epoch 2");
    expect(workers.starts).toEqual([1, 1]); // adopted, never restarted
    // the ranks' durable save of step 4 (epoch 1's names) committed by epoch 2
    expect(checkpointEpochs(out).find((c) => c.step === 4)).toMatchObject({ committed: 2, names: [1] });
    await sameAsStraight(out);
  } finally {
    first.kill("SIGKILL");
    resumed?.kill("SIGKILL");
    await workers.stop();
  }
}, 180_000);

test("killed -9 while a checkpoint is being committed, its own workers gone with it: restarted from the previous commit, the redone save committed under the new epoch", async () => {
  const out = tempDir("edges-commit-restart");
  const first = spawn([COORD_ENTRY, JSON.stringify(config(out, "edges2", 2)), "train"]);
  const firstErr = textOf(first.stderr);
  let resumed: Proc | null = null;
  try {
    await killWhileCommitting(first, "edges2", 4, out, 2).catch(async (e) => {
      throw new Error(`${(e as Error).message}: ${(await firstErr).slice(-1500)}`);
    });
    await rankProcessesGone("edges2", 2); // its workers end with it (their stdin is its pipe)
    resumed = resume("edges2");
    const [code, log] = await Promise.all([resumed.exited, textOf(resumed.stderr)]);
    if (code !== 0) throw new Error(`resumed coordinator exit ${code}: ${log.slice(-2000)}`);
    expect(log).toMatch(/resuming job edges2 under epoch 2 from \S+global_step_2: the ranks cannot be adopted/);
    // epoch 1's durable but uncommitted files of step 4 were replaced by epoch 2's save of it
    expect(checkpointEpochs(out).map((c) => [c.step, c.committed, ...c.names])).toEqual([[2, 1, 1], [4, 2, 2], [6, 2, 2]]);
    await sameAsStraight(out);
  } finally {
    first.kill("SIGKILL");
    resumed?.kill("SIGKILL");
  }
}, 180_000);

test("killed twice in a row: the resumed coordinator killed -9 while adopting, a second --resume takes the job over, bitwise equal", async () => {
  const out = tempDir("edges-twice");
  const first = spawn([COORD_ENTRY, JSON.stringify(config(out, "edges3", 0)), "train"]);
  const firstErr = textOf(first.stderr);
  const workers = launcher("edges3", 2);
  let second: Proc | null = null;
  let third: Proc | null = null;
  try {
    await stateWhere(server, "edges3", (st) => st.last_checkpoint === "checkpoints/global_step_2" && st.step >= 3, first, firstErr);
    first.kill("SIGKILL");
    await first.exited;
    second = resume("edges3");
    const secondErr = textOf(second.stderr);
    // the moment its record says it adopts epoch 1 under epoch 2: the ranks may or may not have switched
    await stateWhere(server, "edges3", (st) => st.epoch === 2 && st.adopt_from === 1, second, secondErr);
    second.kill("SIGKILL");
    await second.exited;
    third = resume("edges3");
    const [code, log] = await Promise.all([third.exited, textOf(third.stderr)]);
    if (code !== 0) throw new Error(`second --resume exit ${code}: ${log.slice(-2000)}`);
    // whether it adopted (every rank had switched to epoch 2) or restarted from the newest commit
    expect(log).toMatch(/adopting the running ranks of job edges3 \(epoch 2\) under epoch 3|resuming job edges3 under epoch \d from/);
    const { nc, kv } = await kvClient(server.url, server.token);
    expect(await readState(kv, "edges3")).toMatchObject({ phase: "done", step: STEPS, error: null, last_checkpoint: "checkpoints/global_step_6" });
    expect((await readState(kv, "edges3"))!.epoch).toBeGreaterThanOrEqual(3);
    await nc.close();
    await sameAsStraight(out);
    const last = checkpointEpochs(out).at(-1)!;
    expect(last.committed).toBeGreaterThanOrEqual(3);
  } finally {
    first.kill("SIGKILL");
    second?.kill("SIGKILL");
    third?.kill("SIGKILL");
    await workers.stop();
  }
}, 240_000);

test("a zombie coordinator (frozen while committing, taken over, then woken) commits nothing and exits; the checkpoints stay those of the new epoch", async () => {
  const out = tempDir("edges-zombie");
  const first = spawn([COORD_ENTRY, JSON.stringify(config(out, "edges4", 0)), "train"]);
  const firstErr = textOf(first.stderr);
  const workers = launcher("edges4", 2);
  let resumed: Proc | null = null;
  try {
    // frozen (SIGSTOP) with every rank's report of step 4 queued to it, metadata.json not written
    await killWhileCommitting(first, "edges4", 4, out, 2, true);
    // a stopped coordinator counts dead once its record is quiet for dead_after_s: until then
    // --resume is refused naming it (each refusal is that event; bounded by the test's timeout)
    let code: number;
    let log: string;
    for (;;) {
      resumed = resume("edges4", "--launch.dead_after_s", "4");
      [code, log] = await Promise.all([resumed.exited, textOf(resumed.stderr)]);
      if (code === 0 || !log.includes("is still run by coordinator")) break;
    }
    if (code !== 0) throw new Error(`resumed coordinator exit ${code}: ${log.slice(-2000)}`);
    const ckpt = join(out, "checkpoints");
    const metas = () => readdirSync(ckpt).sort().map((d) => (existsSync(join(ckpt, d, "metadata.json")) ? `${d}: ${readFileSync(join(ckpt, d, "metadata.json"), "utf8")}` : d));
    const before = metas();
    first.kill("SIGCONT"); // it wakes with epoch 1's reports of step 4 to commit
    const zombieCode = await first.exited;
    const zombieLog = await firstErr;
    expect(zombieCode).not.toBe(0);
    expect(metas()).toEqual(before);
    expect(readdirSync(join(ckpt, "global_step_4")).filter((n) => n.startsWith("metadata"))).toEqual(["metadata.json"]);
    // whichever of its queued reports it handles first (a rank's save of step 4, the step's metrics)
    expect(zombieLog).toMatch(/job stopped: (commit step 4|metrics of step 4): refused: this coordinator's epoch 1 is older than the job's current epoch 2\b.*: another coordinator took the job over; this one stops/);
    const { nc, kv } = await kvClient(server.url, server.token);
    expect(await readState(kv, "edges4")).toMatchObject({ phase: "done", step: STEPS, error: null, epoch: 2 });
    await nc.close();
    await sameAsStraight(out);
  } finally {
    first.kill("SIGKILL");
    resumed?.kill("SIGKILL");
    await workers.stop();
  }
}, 180_000);

test("SIGTERM twice in a row, and again while it stops: the job is recorded stopped, its workers stopped, the last commit intact", async () => {
  const out = tempDir("edges-sigterm");
  const coord = spawn([COORD_ENTRY, JSON.stringify(config(out, "edges5", 2)), "train"]);
  // the log, read as it comes: the signal that lands while it stops is sent on its "job stopped" line
  let log = "";
  let onLine = () => {};
  const reading = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of coord.stderr) {
      log += dec.decode(chunk, { stream: true });
      onLine();
    }
  })();
  const logged = (s: string) => new Promise<void>((r) => ((onLine = () => void (log.includes(s) && r())), onLine()));
  try {
    await stateWhere(server, "edges5", (st) => st.last_checkpoint === "checkpoints/global_step_2" && st.step >= 3, coord, reading.then(() => log));
    const { nc, kv } = await kvClient(server.url, server.token);
    // one worker frozen: the coordinator's reap of it (3 s, then SIGKILL) keeps it stopping while
    // the third SIGTERM lands
    const frozen = (await readRank(kv, "edges5", 1))!.pid;
    process.kill(frozen, "SIGSTOP");
    coord.kill("SIGTERM"); // what a launcher signalling `bun run` and its child does
    coord.kill("SIGTERM");
    await Promise.race([logged("job stopped: interrupted by SIGTERM"), coord.exited]);
    coord.kill("SIGTERM");
    expect(await coord.exited).toBe(143);
    await reading;
    expect(log).toContain("SIGTERM again: already stopping on SIGTERM");
    expect(await readState(kv, "edges5")).toMatchObject({ phase: "stopped", error: "interrupted by SIGTERM", last_checkpoint: expect.stringMatching(/^checkpoints\/global_step_[24]$/) });
    await nc.close();
    expect(JSON.parse(readFileSync(join(out, "job.json"), "utf8"))).toMatchObject({ phase: "stopped" });
    expect(pidAlive(frozen)).toBe(false);
    // every commit whole: its files exactly those it lists
    for (const c of checkpointEpochs(out)) expect({ step: c.step, unlisted: c.unlisted, committed: c.committed }).toEqual({ step: c.step, unlisted: [], committed: 1 });
    expect(checkpointEpochs(out).map((c) => c.step)[0]).toBe(2);
  } finally {
    coord.kill("SIGKILL");
  }
}, 120_000);
