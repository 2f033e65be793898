// Failure headlines: the cause as text (never raw JSON log lines, never "step -1"), and the rank
// that died named rather than the survivor whose link to it broke.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { runJob } from "../../actors/coordinator.ts";
import { causeOf, describe, precedence, type Failure } from "../../actors/supervision.ts";
import { childPids, fileLogger, kvClient, readRank } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

// What a worker's stderr holds when a collective times out (pino JSON, as written off a terminal),
// the tail starting inside an earlier line.
const TAIL = [
  `2,"msg":"train runner ready"}`,
  JSON.stringify({ level: 30, time: 1, pid: 7, hostname: "h", name: "worker-0", proc: "worker-0", msg: "joined" }),
  JSON.stringify({ level: 50, time: 2, pid: 7, hostname: "h", name: "worker-0", proc: "worker-0", err: "all_reduce seq 44: connection to rank 1: timed out", msg: "rank failed" }),
  JSON.stringify({ level: 30, time: 3, pid: 7, hostname: "h", name: "worker-0", proc: "worker-0", rank: 0, msg: "worker closed" }),
  "",
].join("\n");

test("an exited rank's headline carries its error as text, not its log lines", () => {
  expect(causeOf(TAIL)).toBe("all_reduce seq 44: connection to rank 1: timed out");
  const f: Failure = { kind: "exited", rank: 0, pid: 7, code: 1, signal: null, stderrTail: TAIL };
  const text = describe(f);
  expect(text).toBe("rank 0 (pid 7) exited with code 1 before the job ended: all_reduce seq 44: connection to rank 1: timed out");
  expect(text).not.toContain("{");
  // a plain line (console.error of a thrown error) is text too; JSON below error level is not a cause
  expect(causeOf(`${JSON.stringify({ level: 30, msg: "joined" })}\nworker rank 2: job x has no x.state in KV\n`)).toBe("worker rank 2: job x has no x.state in KV");
  expect(causeOf(JSON.stringify({ level: 30, msg: "joined" }))).toBeNull();
  expect(describe({ kind: "exited", rank: 1, pid: 8, code: 1, signal: null, stderrTail: JSON.stringify({ level: 30, msg: "joined" }) })).toBe("rank 1 (pid 8) exited with code 1 before the job ended");
  // pino's serialized Error object
  expect(causeOf(JSON.stringify({ level: 60, err: { type: "Error", message: "disk full", stack: "Error: disk full\n  at x" }, msg: "fatal" }))).toBe("disk full");
});

test("a failure before the first step never says step -1", () => {
  const text = describe({ kind: "reported", rank: 3, step: -1, error: "checkpoint /c/global_step_4: rank 0 file model_rank_00000.safetensors is corrupted" });
  expect(text).toBe("rank 3 failed while starting: checkpoint /c/global_step_4: rank 0 file model_rank_00000.safetensors is corrupted");
  expect(describe({ kind: "reported", rank: 3, step: 0, error: "x" })).toBe("rank 3 failed at step 0: x");
});

test("precedence: interrupt, then the dead rank, then its own error, then survivors' reports, silence, secondary exits", () => {
  const killed: Failure = { kind: "exited", rank: 1, pid: 1, code: null, signal: "SIGKILL", stderrTail: "" };
  const crashed: Failure = { kind: "exited", rank: 1, pid: 1, code: 1, signal: null, stderrTail: "" };
  const secondary: Failure = { kind: "exited", rank: 0, pid: 2, code: 6, signal: null, stderrTail: "" };
  const survivor: Failure = { kind: "reported", rank: 0, step: 4, error: "all_reduce seq 9: connection to rank 1: closed" };
  const silent: Failure = { kind: "silent", rank: 2, silentS: 30, deadlineS: 15 };
  const order = [{ kind: "interrupted", signal: "SIGINT" } as Failure, killed, crashed, survivor, silent, secondary].map(precedence);
  expect([...order].sort((a, b) => a - b)).toEqual(order);
  expect(new Set(order).size).toBe(order.length);
});

test("kill -9 of rank 1 in a 2-rank job: the headline names rank 1, not rank 0 whose link to it broke", async () => {
  const dir = tempDir("headline");
  const out = tempDir("headline-out");
  const config = tinyTrainConfig(dir, out, { world_size: 2 }, { data_parallel_mode: "ddp", max_steps: 1000, save_steps: 0, save_hf_weights: false });
  const { logger, file } = fileLogger(out);
  let killed = 0;
  const code = await runJob(config, logger, {
    onStep: async (m, i) => {
      if (m.step !== 2) return;
      const { nc, kv } = await kvClient(i.natsUrl, i.token);
      killed = (await readRank(kv, i.job, 1))!.pid;
      await nc.close();
      process.kill(killed, "SIGKILL");
    },
  });
  expect(code).toBe(1);
  const stopped = readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((l) => String(l.msg).startsWith("job stopped:"));
  expect(stopped.msg).toBe(`job stopped: rank 1 (pid ${killed}) was killed by SIGKILL before the job ended`);
  expect(childPids()).toEqual([]);
}, 60_000);
