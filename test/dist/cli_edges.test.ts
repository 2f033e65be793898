// The edges of the commands as a user meets them, with real processes and a real nats-server:
// a worker whose rank is outside the job's world is refused at once (never "waiting for ever"),
// a worker (or `bun run jobs`) given a wrong token or an unreachable URL says so in one line, a
// finished job's record stays readable from its output folder (`bun run jobs --dir`), and
// `bun run jobs` with no argument finds the newest job under the current folder.
import { expect, test } from "bun:test";
import { keys } from "../../actors/nats.ts";
import { COORD_ENTRY, JOBS, WORKER_MAIN, kvClient, readMetrics, textOf, natsServerForFile } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

const server = natsServerForFile();

function worker(args: string[], token = server.token) {
  return Bun.spawn([process.execPath, WORKER_MAIN, "--nats", server.url, ...args], {
    env: { ...process.env, VEOMNI_NATS_TOKEN: token }, stdin: "ignore", stdout: "ignore", stderr: "pipe",
  });
}

test("a worker whose rank is outside the world is refused naming the world size; the job goes on", async () => {
  const out = tempDir("cli-rank");
  const job = "ux-rank";
  const config = {
    train: { output_dir: out, lr: 0.5, max_steps: 3, micro_batch_size: 2 },
    launch: { nats: server.url, nats_token: server.token, local_workers: 0, world_size: 2, job_id: job, heartbeat_s: 0.2, dead_after_s: 10 },
  };
  const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  // wait for the job to be in rendezvous (event: its state key appears)
  const { nc, kv } = await kvClient(server.url, server.token);
  const w = await kv.watch({ key: keys.state(job) });
  for await (const e of w) if (e.operation === "PUT") break;
  w.stop();
  await nc.close();

  for (const args of [["--rank", "5"], ["--rank", "2", "--job", job]]) {
    const p = worker(args);
    const [code, err] = await Promise.all([p.exited, textOf(p.stderr)]);
    expect(code).toBe(1);
    expect(err).toContain(`--rank ${args[1]}: job ${job}`);
    expect(err).toContain("launch.world_size 2 (ranks 0..1)");
  }
  const ws = [worker(["--rank", "0"]), worker(["--rank", "1"])];
  const [cc, ...wc] = await Promise.all([coord.exited, ...ws.map((p) => p.exited)]);
  expect({ cc, wc }).toEqual({ cc: 0, wc: [0, 0] });
  expect(readMetrics(out).map((m) => m.step)).toEqual([1, 2, 3]);

  // the record kept in the output folder says how the job ended
  const jobs = Bun.spawn([process.execPath, JOBS, "--dir", out], { stdout: "pipe", stderr: "pipe" });
  const [jc, text] = await Promise.all([jobs.exited, textOf(jobs.stdout)]);
  expect(jc).toBe(0);
  expect(text).toContain(`${job}  done  step 3/3`);
  expect(text).toContain(`kept copy ${out}/job.json`);
}, 60_000);

test("a worker with a wrong token, or no server at the URL, says so in one line", async () => {
  const bad = worker(["--rank", "0"], "not-the-token");
  const [code, err] = await Promise.all([bad.exited, textOf(bad.stderr)]);
  expect(code).toBe(2);
  expect(err.trim()).toBe(`worker rank 0: --token: the NATS server at ${server.url} refused the connection (authorization violation): give its token with --token or VEOMNI_NATS_TOKEN`);
  const free = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const url = `nats://127.0.0.1:${free.port}`;
  free.stop(true);
  const p = Bun.spawn([process.execPath, WORKER_MAIN, "--rank", "0", "--nats", url], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const [c2, e2] = await Promise.all([p.exited, textOf(p.stderr)]);
  expect(c2).toBe(2);
  expect(e2.trim()).toBe(`worker rank 0: --nats: cannot reach NATS at ${url} (connection refused): is nats-server running there and listening on that port?`);
  // `bun run jobs` with a wrong token names the variable once
  const j = Bun.spawn([process.execPath, JOBS, "--nats", server.url], { env: { ...process.env, VEOMNI_NATS_TOKEN: "not-the-token" }, stdout: "pipe", stderr: "pipe" });
  const [c3, e3] = await Promise.all([j.exited, textOf(j.stderr)]);
  expect(c3).toBe(2);
  expect(e3.split("\n")[0]).toBe(`jobs: VEOMNI_NATS_TOKEN: the NATS server at ${server.url} refused the connection (authorization violation): give its token with VEOMNI_NATS_TOKEN; point it at a job with --dir OUTPUT_DIR or --nats URL`);
}, 30_000);

test("a worker that says it is exiting exits then, even with a step blocked on a dead peer", async () => {
  const dir = tempDir("cli-exit");
  const out = tempDir("cli-exit-out");
  const cfg = tinyTrainConfig(dir, out, {}, { max_steps: 100000, save_hf_weights: false });
  const job = "ux-exit";
  // collective_timeout_s 300: longer than this test may run, so only a prompt exit passes
  const config = { ...cfg, launch: { ...cfg.launch, nats: server.url, nats_token: server.token, local_workers: 0, world_size: 2, job_id: job, heartbeat_s: 0.2, dead_after_s: 3, collective_timeout_s: 300 } };
  const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "train"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  const ws = [worker(["--rank", "0"]), worker(["--rank", "1"])];
  const err0 = textOf(ws[0].stderr);
  // wait (KV events) until both ranks have run a step, then freeze rank 1 (SIGSTOP: its sockets
  // stay open): rank 0 waits on it in the next step's collectives until the coordinator, seeing
  // rank 1 silent, stops the job
  const { nc, kv } = await kvClient(server.url, server.token);
  const w = await kv.watch({ key: `${job}.ranks.>` });
  const stepped = new Set<number>();
  for await (const e of w) {
    if (e.operation === "PUT" && e.json<{ step: number }>().step >= 1) stepped.add(e.json<{ rank: number }>().rank);
    if (stepped.size === 2) break;
  }
  w.stop();
  await nc.close();
  ws[1].kill("SIGSTOP");
  expect(await coord.exited).toBe(1);
  expect(await ws[0].exited).toBe(6); // the job failed elsewhere
  expect(await err0).toContain("exiting");
  ws[1].kill("SIGKILL");
  await ws[1].exited;
}, 90_000);

// `bun run jobs` with no argument, run from the folder holding the output folders: the newest
// running job's embedded server (OUTPUT_DIR/.nats); once that is gone, the newest kept record
// (OUTPUT_DIR/job.json); with neither, one line saying how to point it.
test("`bun run jobs` with no argument finds the newest job from the newest output folder, or says how to point it", async () => {
  const root = tempDir("cli-jobs");
  const env = { ...process.env, VEOMNI_NATS_URL: undefined, VEOMNI_NATS_TOKEN: undefined };
  const jobs = async (cwd: string) => {
    const p = Bun.spawn([process.execPath, JOBS], { cwd, env, stdout: "pipe", stderr: "pipe" });
    const [code, out, err] = await Promise.all([p.exited, textOf(p.stdout), textOf(p.stderr)]);
    return { code, out, err };
  };
  const start = (name: string, steps: number) => Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify({
    train: { output_dir: `${root}/${name}`, lr: 0.5, max_steps: steps, micro_batch_size: 20 },
    launch: { world_size: 1, heartbeat_s: 0.2, job_id: name },
  }), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  // a job that finishes (only its kept record remains) beside one that runs on, whose record is
  // rewritten at every step, so it is the newer (the coordinator logs when its workers run)
  const old = start("old", 2);
  const live = start("live", 1_000_000);
  expect(await old.exited).toBe(0);
  const reader = live.stderr.getReader();
  for (let text = ""; !text.includes("rendezvous done; running");) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`coordinator ended early: ${text.slice(-1000)}`);
    text += new TextDecoder().decode(value);
  }
  let r = await jobs(root);
  expect(r.code).toBe(0);
  expect(r.err).toContain(`the newest running job's server, from ${root}/live/.nats`);
  expect(r.out).toMatch(/^live {2}running {2}step \d+\/1000000/m);
  // Ctrl-C: the server is gone; the newest kept record is the one shown
  live.kill("SIGINT");
  void (async () => { while (!(await reader.read()).done); })();
  expect(await live.exited).toBe(130);
  r = await jobs(root);
  expect(r.code).toBe(0);
  expect(r.out).toContain(`(kept copy ${root}/live/job.json: no running job found under the current folder; newest kept record)`);
  expect(r.out).toMatch(/^live {2}(failed|stopped|cancelled)/m);
  // nothing to find: one line naming the ways to point it (no server on the default URL here)
  const empty = tempDir("cli-jobs-empty");
  r = await jobs(empty);
  expect(r.code).toBe(2);
  expect(r.err.split("\n")[0]).toMatch(/^jobs: .*nats:\/\/127\.0\.0\.1:4222.*; point it at a job with --dir OUTPUT_DIR or --nats URL$/);
}, 60_000);
