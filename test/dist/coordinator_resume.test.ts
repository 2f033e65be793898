// A coordinator killed with -9 in the middle of a job, and `bun run coordinator --resume JOB`
// taking it over: the configuration comes from the job's KV record, the ranks restart under the
// next epoch from the newest committed checkpoint, the steps after it are redone once, and the
// final parameters are bitwise those of an uninterrupted run (same losses, same exported bytes).
import { expect, test } from "bun:test";
import { join } from "node:path";
import { keys, type JobState } from "../../actors/nats.ts";
import { COORD_ENTRY, ROOT, alive, checkpointEpochs, kvClient, readRank, readState, textOf, natsServerForFile, expectSameRun } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

const server = natsServerForFile();

const COORD_MAIN = join(ROOT, "actors/coordinator_main.ts");

function config(dir: string, out: string, job: string) {
  const c = tinyTrainConfig(dir, out, { world_size: 2, local_workers: 2, nats: server.url, nats_token: server.token, job_id: job }, {
    data_parallel_mode: "fsdp2", max_steps: 8, save_steps: 2,
  });
  return c;
}

function coordinator(args: string[]) {
  return Bun.spawn([process.execPath, ...args], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
}

test("coordinator killed mid-job, resumed with --resume JOB: every step once, final parameters bitwise equal", async () => {
  const dir = tempDir("resume");
  const straightOut = tempDir("resume-straight");
  const straight = coordinator([COORD_ENTRY, JSON.stringify(config(dir, straightOut, "straight")), "train"]);
  const straightErr = textOf(straight.stderr);
  if ((await straight.exited) !== 0) throw new Error(`uninterrupted run: ${(await straightErr).slice(-1500)}`);

  const out = tempDir("resume-out");
  const first = coordinator([COORD_ENTRY, JSON.stringify(config(dir, out, "res1")), "train"]);
  const firstErr = textOf(first.stderr);
  const { nc, kv } = await kvClient(server.url, server.token);
  try {
    // kill once step 4's save is committed and step 5 has finished (work past the commit to redo)
    const w = await kv.watch({ key: keys.state("res1") });
    const reached = (async () => {
      for await (const e of w) {
        const st = e.operation === "PUT" ? e.json<JobState>() : null;
        if (st && st.last_checkpoint === "checkpoints/global_step_4" && st.step >= 5) return st;
      }
    })();
    const ended = first.exited.then(async (c) => {
      throw new Error(`the first coordinator ended (${c}) before the kill: ${(await firstErr).slice(-1500)}`);
    });
    await Promise.race([reached, ended]);
    ended.catch(() => {});
    w.stop();
    const oldWorkers = [(await readRank(kv, "res1", 0))!.pid, (await readRank(kv, "res1", 1))!.pid];
    first.kill("SIGKILL");
    await first.exited;
    expect((await readState(kv, "res1"))!.phase).toBe("running"); // nobody said otherwise

    const resumed = coordinator([COORD_MAIN, "--resume", "res1", "--launch.nats", server.url, "--launch.nats_token", server.token]);
    const resumedErr = textOf(resumed.stderr);
    const code = await resumed.exited;
    if (code !== 0) throw new Error(`resumed coordinator exit ${code}: ${(await resumedErr).slice(-2000)}`);
    for (const p of oldWorkers) expect(alive(p)).toBe(false);

    const st = (await readState(kv, "res1"))!;
    expect(st).toMatchObject({ phase: "done", step: 8, epoch: 2, error: null, last_checkpoint: "checkpoints/global_step_8" });
    expectSameRun(out, straightOut, 8); // every tensor's bytes, whatever the file's tensor order
    // the steps redone under epoch 2 are saved under its names; epoch 1's commits stay as they were,
    // and nothing epoch 1 left uncommitted stays beside a commit (step 6: committed by epoch 1 when
    // the kill came late, after its save, on a loaded machine)
    const ck = checkpointEpochs(out).map((c) => [c.step, c.committed, ...c.names, ...c.unlisted]);
    expect(ck.filter(([s]) => s !== 6)).toEqual([[2, 1, 1], [4, 1, 1], [8, 2, 2]]);
    expect([[6, 1, 1], [6, 2, 2]] as Array<Array<number | string>>).toContainEqual(ck[2]);
  } finally {
    first.kill("SIGKILL");
    await nc.close();
  }
}, 120_000);

test("--resume refuses while the job's coordinator is alive, and names what it needs", async () => {
  const out = tempDir("resume-live");
  const cfg = tinyTrainConfig(tempDir("resume-live-data"), out, { world_size: 1, local_workers: 1, nats: server.url, nats_token: server.token, job_id: "live1" }, { max_steps: 100000 });
  const live = coordinator([COORD_ENTRY, JSON.stringify(cfg), "train"]);
  const { nc, kv } = await kvClient(server.url, server.token);
  try {
    const w = await kv.watch({ key: keys.state("live1") });
    for await (const e of w) if (e.operation === "PUT" && e.json<JobState>().phase === "running") break;
    w.stop();
    const r = coordinator([COORD_MAIN, "--resume", "live1", "--launch.nats", server.url, "--launch.nats_token", server.token]);
    const [code, err] = await Promise.all([r.exited, textOf(r.stderr)]);
    expect(code).not.toBe(0);
    expect(err).toContain(`job live1 is still run by coordinator pid ${live.pid}`);
    const none = coordinator([COORD_MAIN, "--resume", "nosuch"]);
    const [c2, e2] = await Promise.all([none.exited, textOf(none.stderr)]);
    expect(c2).toBe(2);
    expect(e2).toContain("--resume nosuch: give --launch.nats URL (the job's record in KV) or --train.output_dir DIR (its veomni_cli.yaml)");
    const missing = coordinator([COORD_MAIN, "--resume", "nosuch", "--launch.nats", server.url, "--launch.nats_token", server.token]);
    const [c3, e3] = await Promise.all([missing.exited, textOf(missing.stderr)]);
    expect(c3).toBe(2);
    expect(e3).toContain(`--resume nosuch: no nosuch.config in KV bucket veomni_jobs at ${server.url}`);
  } finally {
    live.kill("SIGINT");
    await live.exited;
    await nc.close();
  }
}, 60_000);
