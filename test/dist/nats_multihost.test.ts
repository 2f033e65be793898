// The multi-host shape on one machine: an external nats-server, a coordinator process and worker
// processes started separately (workers first, without --job: they find the job in KV), as a
// user would on several hosts. Then a worker killed with -9 is declared dead by the heartbeat
// deadline (the coordinator did not spawn it, so only its silence tells). Also: the real train step
// across such processes, and Ctrl-C of a coordinator process (exit 130, nothing left running).
// Hosts with their own network stacks (namespaces, veth, a bridge): netns_multihost.test.ts.
import { expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { keys, type RankRecord } from "../../actors/nats.ts";
import { COORD_ENTRY, JOBS, WORKER_MAIN, alive, kvClient, readMetrics, readRank, readState, textOf, natsServerForFile } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

const server = natsServerForFile();

function startWorker(rank: number, token = server.token): Subprocess<"ignore", "ignore", "pipe"> {
  return Bun.spawn([process.execPath, WORKER_MAIN, "--rank", String(rank), "--nats", server.url], {
    env: { ...process.env, VEOMNI_NATS_TOKEN: token },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
}

function startCoordinator(job: string, out: string, train: object, launch: object): Subprocess<"ignore", "ignore", "pipe"> {
  const config = {
    train: { output_dir: out, lr: 0.5, ...train },
    launch: { nats: server.url, nats_token: server.token, local_workers: 0, world_size: 2, job_id: job, heartbeat_s: 0.2, ...launch },
  };
  return Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
}

test("external nats-server, coordinator and workers started separately", async () => {
  const out = tempDir("mh");
  const workers = [startWorker(0), startWorker(1)];
  const coord = startCoordinator("mh1", out, { max_steps: 4, micro_batch_size: 5 }, { dead_after_s: 5 });
  const [cc, ...wc] = await Promise.all([coord.exited, ...workers.map((w) => w.exited)]);
  expect({ coordinator: cc, workers: wc }).toEqual({ coordinator: 0, workers: [0, 0] });
  expect(readMetrics(out).map((m) => m.step)).toEqual([1, 2, 3, 4]);
  // the server outlives the job: its record stays readable
  const { nc, kv } = await kvClient(server.url, server.token);
  expect(await readState(kv, "mh1")).toMatchObject({ phase: "done", step: 4, world_size: 2, error: null });
  for (const r of [0, 1]) {
    const rec = await readRank(kv, "mh1", r);
    expect(rec).toMatchObject({ rank: r, status: "done", step: 4, pid: workers[r].pid });
  }
  await nc.close();
  // `bun run jobs` prints the same for users without the NATS CLI
  const jobs = Bun.spawn([process.execPath, JOBS, "mh1", "--nats", server.url], { env: { ...process.env, VEOMNI_NATS_TOKEN: server.token }, stdout: "pipe", stderr: "pipe" });
  const [jc, text] = await Promise.all([jobs.exited, textOf(jobs.stdout)]);
  expect(jc).toBe(0);
  expect(text).toContain("mh1  done  step 4/4");
  expect(text).toMatch(new RegExp(`rank 1  done  step 4  \\S+ pid ${workers[1].pid}`));
}, 30_000);

test("kill -9 of a remote worker: the heartbeat deadline stops the job naming the rank", async () => {
  const out = tempDir("mh");
  const deadAfter = 4; // the deadline under test; long enough that a loaded host does not silence the live rank 0
  const coord = startCoordinator("mh2", out, { max_steps: 1000, micro_batch_size: 40 }, { dead_after_s: deadAfter });
  const coordErr = textOf(coord.stderr);
  const workers = [startWorker(0), startWorker(1)];
  const { nc, kv } = await kvClient(server.url, server.token);
  // wait (on KV events) until rank 1 has finished 2 steps, then kill it mid-run
  const w = await kv.watch({ key: keys.rank("mh2", 1) });
  for await (const e of w) if (e.operation === "PUT" && e.json<RankRecord>().step >= 2) break;
  w.stop();
  workers[1].kill("SIGKILL");
  const [cc, w0] = await Promise.all([coord.exited, workers[0].exited]);
  expect(cc).toBe(1);
  expect(w0).toBe(6); // rank 0 was stopped: the job failed elsewhere
  const st = await readState(kv, "mh2");
  expect(st!.phase).toBe("failed");
  expect(st!.error).toMatch(new RegExp(`rank 1 is dead: no heartbeat for [\\d.]+ s \\(launch.dead_after_s = ${deadAfter}\\)`));
  expect(await coordErr).toContain("rank 1 is dead");
  for (const p of [coord.pid, ...workers.map((x) => x.pid)]) expect(alive(p)).toBe(false);
  await nc.close();
}, 30_000);

test("the real train step across separately started processes (tiny model, DDP on 2 ranks)", async () => {
  const dir = tempDir("mh-train");
  const out = tempDir("mh-train-out");
  const cfg = tinyTrainConfig(dir, out, {}, { max_steps: 3, save_hf_weights: false });
  const config = { ...cfg, launch: { ...cfg.launch, nats: server.url, nats_token: server.token, local_workers: 0, world_size: 2, job_id: "mh3" } };
  const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "train"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const coordErr = textOf(coord.stderr);
  const workers = [startWorker(0), startWorker(1)];
  const [cc, ...wc] = await Promise.all([coord.exited, ...workers.map((w) => w.exited)]);
  if (cc !== 0) throw new Error(`coordinator exit ${cc}: ${(await coordErr).slice(-1500)}`);
  expect(wc).toEqual([0, 0]);
  const m = readMetrics(out);
  expect(m.map((x) => x.step)).toEqual([1, 2, 3]);
  expect(m[0].loss!).toBeGreaterThan(4); // ~ln(96) at random init
  expect(m[0].mfu!).toBeGreaterThan(0);
}, 30_000);

test("Ctrl-C of a coordinator process: exit 130, its workers and embedded nats-server gone", async () => {
  const out = tempDir("mh-int");
  const config = { train: { output_dir: out, lr: 0.5, max_steps: 100000, micro_batch_size: 20 }, launch: { world_size: 2, heartbeat_s: 0.2 } };
  const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  // read the coordinator's JSON log lines until the job runs; collect the pids it names
  const pids: number[] = [];
  const reader = coord.stderr.getReader();
  let text = "";
  while (!text.includes("rendezvous done; running")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`coordinator ended early: ${text.slice(-1000)}`);
    text += new TextDecoder().decode(value);
  }
  for (const m of text.matchAll(/"pid":(\d+),"addr"/g)) pids.push(Number(m[1]));
  const serverPid = Number(/"nats_pid":(\d+)/.exec(text)?.[1] ?? 0);
  coord.kill("SIGINT");
  void (async () => { while (!(await reader.read()).done); })();
  expect(await coord.exited).toBe(130);
  expect(pids).toHaveLength(2);
  expect(serverPid).toBeGreaterThan(0);
  for (const p of [...pids, serverPid]) expect(alive(p)).toBe(false);
}, 30_000);
