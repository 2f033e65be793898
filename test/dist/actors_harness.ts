// Shared helpers for the actors/NATS tests: configs, a file-only logger, KV readers, and
// checks that every process a test started is gone. Real servers, real processes; no sleeps.
import { afterAll, beforeAll, expect } from "bun:test";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { startNatsServer, type NatsServer } from "../../actors/embedded.ts";
import { SafetensorsFile } from "../../checkpoint/safetensors.ts";
import { join } from "node:path";
import pino from "pino";
import { ConfigSchema, type Config } from "../../configs/index.ts";
import type { Logger } from "../../configs/index.ts";
import { connectNats, openBucket, readJson, keys, type JobState, type RankRecord } from "../../actors/nats.ts";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

export const ROOT = new URL("../../", import.meta.url).pathname;
export const WORKER_MAIN = join(ROOT, "actors/worker_main.ts");
export const JOBS = join(ROOT, "tools/jobs.ts");
export const COORD_ENTRY = join(ROOT, "test/dist/actors_coordinator_entry.ts");


type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? Partial<T[K]> : T[K] };

/** A toy-runner job: `micro_batch_size` is the toy step's busy milliseconds. */
export function toyConfig(outputDir: string, over: DeepPartial<Config> = {}): Config {
  return ConfigSchema.parse({
    train: { output_dir: outputDir, max_steps: 5, micro_batch_size: 10, lr: 0.5, ...over.train },
    launch: { world_size: 2, heartbeat_s: 0.2, dead_after_s: 3, ...over.launch },
    ...(over.model ? { model: over.model } : {}),
    ...(over.data ? { data: over.data } : {}),
  });
}

/** JSON lines to a file only (tests keep stderr quiet); returns the logger and the file path. */
export function fileLogger(dir: string, name = "coordinator"): { logger: Logger; file: string } {
  const file = join(dir, `${name}.test.log`);
  return { logger: pino({ level: "debug" }, pino.destination({ dest: file, sync: true })) as Logger, file };
}

export async function kvClient(url: string, token: string | null): Promise<{ nc: NatsConnection; kv: KV }> {
  const nc = await connectNats({ url, token: token ?? undefined, name: "test-client" });
  return { nc, kv: await openBucket(nc) };
}

export const readState = (kv: KV, job: string) => readJson<JobState>(kv, keys.state(job));
export const readRank = (kv: KV, job: string, r: number) => readJson<RankRecord>(kv, keys.rank(job, r));

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** One nats-server for the calling test file: started before its first test, stopped after its
 *  last, when no process the file started may still run. Read `url` and `token` inside tests. */
export function natsServerForFile(): Pick<NatsServer, "url" | "token"> {
  let server: NatsServer | null = null;
  const running = (): NatsServer => {
    if (!server) throw new Error("natsServerForFile: the server is read before the file's beforeAll started it");
    return server;
  };
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.stop();
    expect(childPids()).toEqual([]);
  });
  return {
    get url() { return running().url; },
    get token() { return running().token; },
  };
}

/** Direct child processes of this test process (nats-server, workers) still running. */
export function childPids(): number[] {
  const r = Bun.spawnSync(["pgrep", "-P", String(process.pid)]);
  return new TextDecoder()
    .decode(r.stdout)
    .split("\n")
    .filter(Boolean)
    .map(Number)
    .filter((p) => {
      // pgrep itself has exited by now; ignore zombies being reaped
      const st = Bun.spawnSync(["ps", "-o", "stat=", "-p", String(p)]);
      const s = new TextDecoder().decode(st.stdout).trim();
      return s !== "" && !s.startsWith("Z");
    });
}

export function readMetrics(outputDir: string): Array<Record<string, number | null>> {
  const text = require("node:fs").readFileSync(join(outputDir, "metrics.jsonl"), "utf8") as string;
  return text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** Collect a process's stderr as text (resolves at EOF). */
export async function textOf(stream: ReadableStream<Uint8Array>): Promise<string> {
  return new Response(stream).text();
}

/** Each committed `global_step_N` under OUTPUT_DIR/checkpoints: the epoch its metadata.json was
 *  committed under, the epochs its rank files' names carry, and any file it holds that the commit
 *  does not list (besides metadata.json and the hf_ckpt export). */
export function checkpointEpochs(outputDir: string): Array<{ step: number; committed: number; names: number[]; unlisted: string[] }> {
  const root = join(outputDir, "checkpoints");
  return readdirSync(root)
    .filter((d) => /^global_step_\d+$/.test(d) && existsSync(join(root, d, "metadata.json")))
    .map((d) => {
      const meta = JSON.parse(readFileSync(join(root, d, "metadata.json"), "utf8")) as { step: number; epoch: number; files: Record<string, unknown> };
      const files = readdirSync(join(root, d)).filter((n) => n !== "metadata.json" && n !== "hf_ckpt");
      const names = [...new Set(Object.keys(meta.files).map((n) => Number(/_e(\d+)_rank_/.exec(n)?.[1] ?? -1)))].sort((a, b) => a - b);
      return { step: meta.step, committed: meta.epoch, names, unlisted: files.filter((n) => !(n in meta.files)) };
    })
    .sort((a, b) => a.step - b.step);
}

/** Resolves with the first state of `job` that `pred` accepts; rejects if `proc` ends first
 *  (with the tail of its stderr `err`). Event-driven: a KV watch of the job's record. */
export async function stateWhere(
  server: { url: string; token: string | null },
  job: string,
  pred: (st: JobState) => boolean,
  proc: { pid: number; exited: Promise<number> },
  err: Promise<string>,
): Promise<JobState> {
  const { nc, kv } = await kvClient(server.url, server.token);
  const w = await kv.watch({ key: keys.state(job) });
  try {
    const ended = proc.exited.then(async (c) => {
      throw new Error(`process ${proc.pid} ended (${c}) before the awaited state of ${job}: ${(await err).slice(-1500)}`);
    });
    const reached = (async () => {
      for await (const e of w) if (e.operation === "PUT" && pred(e.json<JobState>())) return e.json<JobState>();
      throw new Error("watch ended");
    })();
    const st = await Promise.race([reached, ended]);
    ended.catch(() => {});
    return st;
  } finally {
    w.stop();
    await nc.close();
  }
}

/** The run in `out` equals the uninterrupted run in `straight`, bit for bit: steps 1..`steps` each
 *  logged once, the same losses and grad norms, the same exported bytes at the last step. */
export function expectSameRun(out: string, straight: string, steps: number): void {
  const got = readMetrics(out);
  const want = readMetrics(straight);
  expect(got.map((m) => m.step)).toEqual([...Array(steps).keys()].map((i) => i + 1));
  expect(got.map((m) => m.loss)).toEqual(want.map((m) => m.loss));
  expect(got.map((m) => m.grad_norm)).toEqual(want.map((m) => m.grad_norm));
  hfBytesEqual(out, straight, steps);
}

/** Every tensor of two runs' Hugging Face exports at `step` has the same bytes (throws naming the
 *  first that differs; the file's tensor order is the exporter's business, not the parameters'). */
export function hfBytesEqual(outA: string, outB: string, step: number): void {
  const file = (o: string) => new SafetensorsFile(join(o, `checkpoints/global_step_${step}/hf_ckpt/model.safetensors`));
  const [a, b] = [file(outA), file(outB)];
  try {
    const [ka, kb] = [[...a.tensors.keys()].sort(), [...b.tensors.keys()].sort()];
    if (ka.join() !== kb.join()) throw new Error(`the exports hold different tensors: ${ka.join(",")} vs ${kb.join(",")}`);
    for (const name of ka) if (!Buffer.from(a.readRaw(name)).equals(Buffer.from(b.readRaw(name)))) throw new Error(`${name} differs from the uninterrupted run`);
  } finally {
    a.close();
    b.close();
  }
}
