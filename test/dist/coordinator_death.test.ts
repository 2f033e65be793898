// A coordinator that dies leaves nothing behind: kill -9 (its nats-server, the server's watchdog
// and its workers gone, checked by PID; no OUTPUT_DIR/.nats, no /tmp/veomni-nats-* dir), Ctrl-C
// to its process group (the same, exit 130), and on a shared NATS the job record is marked failed
// by `bun run jobs` and by a later coordinator instead of saying "running" for ever.
import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import { startNatsServer } from "../../actors/embedded.ts";
import { keys, toJson, type JobState } from "../../actors/nats.ts";
import { COORD_ENTRY, JOBS, childPids, fileLogger, kvClient, readState, textOf, toyConfig } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";

/** Gone: no such process, or a zombie nobody reaped yet (orphans reparent to a pid 1 that may not reap). */
function gone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "")[0] === "Z";
  } catch {
    return true;
  }
}

/** Wait for processes that are not our children to end: no exit event reaches us for those, so
 *  /proc is polled; the bound is only a safety net (far past any healthy exit, below the test's timeout). */
async function waitGone(pids: number[], ms = 40_000): Promise<number[]> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const left = pids.filter((p) => !gone(p));
    if (left.length === 0) return [];
    await Bun.sleep(20);
  }
  return pids.filter((p) => !gone(p));
}

function descendants(pid: number): number[] {
  const kids = new TextDecoder().decode(Bun.spawnSync(["pgrep", "-P", String(pid)]).stdout).split("\n").filter(Boolean).map(Number);
  return kids.flatMap((k) => [k, ...descendants(k)]);
}

/** A coordinator process (JSON logs on stderr) and the log lines it wrote so far. */
function startCoordinator(config: unknown, detached = false) {
  const proc = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe", detached });
  const lines: Array<Record<string, unknown>> = [];
  let wake = () => {};
  void (async () => {
    let buf = "";
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          lines.push(JSON.parse(l));
        } catch {
          lines.push({ msg: l });
        }
        wake();
      }
    }
    wake();
  })();
  /** Resolves with the first log line matching `msg` (the process's own output is the event). */
  const waitLog = async (msg: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const hit = lines.find((l) => String(l.msg ?? "").includes(msg));
      if (hit) return hit;
      if (proc.exitCode !== null) throw new Error(`coordinator exited (${proc.exitCode}) before logging "${msg}": ${JSON.stringify(lines.slice(-5))}`);
      await new Promise<void>((r) => (wake = r));
    }
  };
  return { proc, lines, waitLog };
}

test("kill -9 of the coordinator: its nats-server, the watchdog and the workers end; no token file or temp dir is left", async () => {
  const out = tempDir("coord-kill");
  const config = toyConfig(out, { train: { max_steps: 100_000, micro_batch_size: 20 }, launch: { world_size: 2 } });
  const c = startCoordinator(config);
  const started = await c.waitLog("embedded nats-server started");
  await c.waitLog("rendezvous done");
  const natsPid = started.nats_pid as number;
  const natsDir = started.nats_dir as string;
  const pids = descendants(c.proc.pid);
  expect(pids).toContain(natsPid);
  expect(existsSync(join(out, ".nats"))).toBe(true);
  expect(existsSync(natsDir)).toBe(true);

  c.proc.kill("SIGKILL");
  await c.proc.exited;
  expect(await waitGone(pids)).toEqual([]);
  expect(existsSync(join(out, ".nats"))).toBe(false);
  expect(existsSync(natsDir)).toBe(false);
}, 60_000);

test("Ctrl-C to the coordinator's process group: exit 130, the job recorded as stopped, nothing left", async () => {
  const out = tempDir("coord-int");
  const config = toyConfig(out, { train: { max_steps: 100_000, micro_batch_size: 20 }, launch: { world_size: 2 } });
  const c = startCoordinator(config, true); // its own process group, as a shell runs a command
  const started = await c.waitLog("embedded nats-server started");
  await c.waitLog("rendezvous done");
  const pids = descendants(c.proc.pid);
  // the terminal's Ctrl-C must not reach the server: the coordinator stops it after recording the end
  const pgid = (pid: number) => new TextDecoder().decode(Bun.spawnSync(["ps", "-o", "pgid=", "-p", String(pid)]).stdout).trim();
  expect(pgid(started.nats_pid as number)).not.toBe(pgid(c.proc.pid));
  process.kill(-c.proc.pid, "SIGINT"); // what the terminal does: the whole foreground group
  expect(await c.proc.exited).toBe(130);
  expect(await waitGone(pids)).toEqual([]);
  expect(existsSync(join(out, ".nats"))).toBe(false);
  expect(existsSync(started.nats_dir as string)).toBe(false);
  expect(c.lines.some((l) => String(l.msg).includes("job stopped: interrupted by SIGINT"))).toBe(true);
  expect(c.lines.some((l) => String(l.msg).includes("could not record the final state"))).toBe(false);
}, 60_000);

test("shared NATS: a job whose coordinator was killed is marked failed by `bun run jobs` and shows its ranks dead", async () => {
  const server = await startNatsServer();
  try {
    const out = tempDir("coord-orphan");
    const config = toyConfig(out, { train: { max_steps: 100_000, micro_batch_size: 20 }, launch: { world_size: 2, local_workers: 2, nats: server.url, nats_token: server.token } });
    const c = startCoordinator(config);
    const created = await c.waitLog("job created");
    await c.waitLog("rendezvous done");
    const job = created.job as string;
    const pids = descendants(c.proc.pid);
    c.proc.kill("SIGKILL");
    await c.proc.exited;
    expect(await waitGone(pids)).toEqual([]);

    const { nc, kv } = await kvClient(server.url, server.token);
    expect((await readState(kv, job))!.phase).toBe("running"); // what it said for ever before
    const jobs = Bun.spawn([process.execPath, JOBS, job, "--nats", server.url], { env: { ...process.env, VEOMNI_NATS_TOKEN: server.token }, stdout: "pipe", stderr: "pipe" });
    const [jc, text] = await Promise.all([jobs.exited, textOf(jobs.stdout)]);
    expect(jc).toBe(0);
    expect(text).toContain(`${job}  failed`);
    expect(text).toContain(`coordinator pid ${c.proc.pid} on ${hostname()} is gone`);
    expect(text).toMatch(/rank 0 {2}dead \(pid \d+ gone\)/);
    expect(text).toMatch(/rank 1 {2}dead \(pid \d+ gone\)/);
    const st = await readState(kv, job);
    expect(st).toMatchObject({ phase: "failed" });
    expect(st!.error).toContain("marked failed by bun run jobs");
    await nc.close();
  } finally {
    await server.stop();
  }
  expect(childPids()).toEqual([]);
}, 60_000);

test("shared NATS: a new coordinator records a dead coordinator's job as failed at its start", async () => {
  const server = await startNatsServer();
  try {
    const { nc, kv } = await kvClient(server.url, server.token);
    // the record a coordinator leaves when killed: "running", its pid now gone
    const dead = Bun.spawn(["true"]);
    await dead.exited;
    const orphan: JobState = {
      job: "orphan-1", phase: "running", epoch: 1, world_size: 1, step: 3, max_steps: 10, loss: 1, tokens_per_s: 1, last_checkpoint: null, error: null,
      coordinator: { host: hostname(), pid: dead.pid }, output_dir: "/nowhere", runner: "toy", updated_at: new Date().toISOString(),
    };
    await kv.create(keys.state("orphan-1"), toJson(orphan));
    const out = tempDir("coord-next");
    const { logger, file } = fileLogger(out);
    const config = toyConfig(out, { train: { max_steps: 2 }, launch: { world_size: 1, local_workers: 1, nats: server.url, nats_token: server.token } });
    expect(await runJob(config, logger, { runner: "toy" })).toBe(0);
    const st = await readState(kv, "orphan-1");
    expect(st).toMatchObject({ phase: "failed", step: 3 });
    expect(st!.error).toContain(`coordinator pid ${dead.pid} on ${hostname()} is gone`);
    expect(readFileSync(file, "utf8")).toContain("job orphan-1 recorded as failed");
    await nc.close();
  } finally {
    await server.stop();
  }
  expect(childPids()).toEqual([]);
}, 60_000);
