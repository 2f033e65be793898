// Restart after failure: a training job is killed -9 mid-step (after backward, before AdamW);
// supervision (actors/supervision.ts decide) restarts it from the newest commit, and the job
// ends with parameters bitwise equal to an uninterrupted run. Real processes and files.
import { afterAll, expect, test, setDefaultTimeout } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { decide } from "../../actors/supervision.ts";
import { resolveLoadPath } from "../../checkpoint/index.ts";
import { writeData } from "./dp_local.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const tmp = tempDir("restart");
const children = new Set<ReturnType<typeof Bun.spawn>>();
afterAll(() => {
  for (const c of children) c.kill(9);
});
const WORLD = 2, STEPS = 8, SAVE = 3;

async function job(out: string, data: string, parkAt?: number) {
  const args = [process.execPath, join(import.meta.dir, "train_child.ts"), out, data, String(WORLD), String(STEPS), String(SAVE)];
  const proc = Bun.spawn(parkAt === undefined ? args : [...args, String(parkAt)], { stdout: "pipe", stderr: "pipe" });
  children.add(proc);
  let text = "";
  const dec = new TextDecoder();
  for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
    text += dec.decode(chunk, { stream: true });
    if (parkAt !== undefined && text.includes(`PARKED ${parkAt}\n`)) proc.kill(9); // mid-step
  }
  const code = await proc.exited;
  children.delete(proc);
  return { code, signal: proc.signalCode, lines: text.trim().split("\n"), stderr: await new Response(proc.stderr as ReadableStream).text(), pid: proc.pid };
}

test("kill -9 mid-step, restart from the last commit: same final parameters", async () => {
  const data = join(tmp, "data.jsonl");
  await writeData(data);
  const ref = await job(join(tmp, "ref"), data);
  expect(ref.stderr).toBe("");
  expect(ref.code).toBe(0);
  expect(ref.lines[0]).toBe("FRESH");
  expect(ref.lines.filter((l) => l.startsWith("COMMIT"))).toEqual(["COMMIT committed 3", "COMMIT committed 6"]);

  const out = join(tmp, "job");
  const first = await job(out, data, 5);
  expect(first.signal).toBe("SIGKILL");
  const lastCheckpoint = resolveLoadPath("auto", out);
  expect(lastCheckpoint).toBe(join(out, "checkpoints", "global_step_3"));
  const d = decide({ kind: "exited", rank: 0, pid: first.pid, code: null, signal: "SIGKILL", stderrTail: "" }, { restarts: 0, maxRestarts: 1, lastCheckpoint });
  expect(d.action).toBe("restart");

  const second = await job(out, data);
  expect(second.code).toBe(0);
  expect(second.lines[0]).toBe("RESUMED 3");
  const losses = (r: { lines: string[] }) => r.lines.filter((l) => l.startsWith("LOSS"));
  expect(losses(second)).toEqual(losses(ref).slice(3)); // bitwise (hex of the f32 bits)
  expect(readFileSync(join(out, "final.f32")).equals(readFileSync(join(tmp, "ref", "final.f32")))).toBe(true);
  // A second failure with restarts exhausted stops the job, naming the rank.
  const stop = decide({ kind: "exited", rank: 1, pid: 1, code: null, signal: "SIGKILL", stderrTail: "" }, { restarts: 1, maxRestarts: 1, lastCheckpoint });
  expect(stop).toMatchObject({ action: "stop", exitCode: 1 });
  expect(stop.reason).toContain("rank 1");
});
