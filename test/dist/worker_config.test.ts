// A worker takes nothing on trust: the configuration a coordinator sends is checked against this
// build's schema, and one of another version is refused by name (the worker also tells the
// coordinator why). And no error in actors/ is swallowed without saying which case it is.
import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startNatsServer } from "../../actors/embedded.ts";
import { keys, openBucket, toJson, type JobState } from "../../actors/nats.ts";
import { PROTOCOL_VERSION, decodeToCoordinator, encode, subjects } from "../../actors/protocol.ts";
import { ROOT, WORKER_MAIN, childPids, kvClient, textOf, toyConfig } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";

test("a welcome whose configuration does not fit this build's schema is refused by name", async () => {
  const server = await startNatsServer();
  try {
    const { nc } = await kvClient(server.url, server.token);
    const kv = await openBucket(nc);
    const job = "other-version";
    const config = toyConfig(tempDir("wcfg"), { launch: { world_size: 1 } });
    const state: JobState = {
      job, phase: "rendezvous", epoch: 1, world_size: 1, step: 0, max_steps: 5, loss: null, tokens_per_s: null, last_checkpoint: null, error: null,
      coordinator: { host: "h", pid: process.pid }, output_dir: "/x", runner: "toy", updated_at: new Date().toISOString(),
    };
    await kv.create(keys.state(job), toJson(state));
    await kv.create(keys.config(job), toJson(config));
    // a coordinator of a newer version: a train field this build does not know, another one renamed
    const newer = { ...config, train: { ...config.train, fancy_new_field: 3, lr: "0.1" } };
    const reports: string[] = [];
    nc.subscribe(subjects(job).register, { callback: (_e, msg) => void msg.respond(encode({ v: PROTOCOL_VERSION, kind: "welcome", job, rank: 0, epoch: 1, secret: "s", peers: [{ rank: 0, host: "h", pid: 1, addr: "127.0.0.1:0" }], config: newer, runner: "toy", resumeFrom: null })) });
    nc.subscribe(subjects(job).report, { callback: (_e, msg) => { const m = decodeToCoordinator(msg.data); if (m.kind === "failed") reports.push(m.error); } });
    await nc.flush();
    const w = Bun.spawn([process.execPath, WORKER_MAIN, "--rank", "0", "--nats", server.url, "--job", job], { env: { ...process.env, VEOMNI_NATS_TOKEN: server.token }, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    const [code, err] = await Promise.all([w.exited, textOf(w.stderr)]);
    expect(code).toBe(3);
    const want = "the coordinator's configuration does not fit this worker's schema (veomni-ts 0.1.0): train.lr: Invalid input: expected number, received string; unknown key train.fancy_new_field";
    expect(err).toContain(want);
    expect(err).toContain("run the coordinator and the workers from the same version");
    await nc.flush();
    expect(reports.some((r) => r.includes(want))).toBe(true);
    await nc.close();
  } finally {
    await server.stop();
  }
  expect(childPids()).toEqual([]);
}, 30_000);

test("actors/: every deliberately ignored rejection says which expected case it is", () => {
  const dir = join(ROOT, "actors");
  const silent: string[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".ts"))) {
    readFileSync(join(dir, f), "utf8").split("\n").forEach((line, i) => {
      // `.catch(() => {})` with no comment on the line: an error dropped without a word
      if (/\.catch\(\(\) => \{\}\)/.test(line) && !line.includes("//")) silent.push(`${f}:${i + 1}: ${line.trim()}`);
    });
  }
  expect(silent).toEqual([]);
});
