// kill -9 at each phase of a save, then `auto` resume: a partial checkpoint is never loaded and
// the previous one stays intact. Real processes, real files; each child parks at its phase and
// is killed there.
import { afterAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { resolveLoadPath } from "../../checkpoint/commit.ts";
import { loadShard } from "../../checkpoint/load.ts";
import { assemble, expectedShapes, fillModel, firstDiff, fsdpPieces, saveAll, smallModel } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const units = smallModel();
const tmp = tempDir("kill");
const children = new Set<ReturnType<typeof Bun.spawn>>();
afterAll(() => {
  for (const c of children) c.kill(9); // none should be left; this is the guarantee
});

type Child = { proc: ReturnType<typeof Bun.spawn>; line: (prefix: string) => Promise<string> };
function spawnChild(args: string[]): Child {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "kill_child.ts"), ...args], { stdout: "pipe", stderr: "inherit" });
  children.add(proc);
  void proc.exited.then(() => children.delete(proc));
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  let buf = "";
  // Resolves with the first stdout line starting with `prefix` (event-driven: waits on the pipe).
  const line = async (prefix: string) => {
    for (;;) {
      const nl = buf.split("\n");
      const hit = nl.slice(0, -1).find((l) => l.startsWith(prefix));
      if (hit) return hit.slice(prefix.length).trim();
      const { value, done } = await reader.read();
      if (done) throw new Error(`child ${args.join(" ")} exited (code ${await proc.exited}) before printing ${prefix}`);
      buf += new TextDecoder().decode(value);
    }
  };
  return { proc, line };
}

async function killAt(c: Child, phase: string): Promise<void> {
  expect(await c.line("PAUSED")).toBe(phase);
  c.proc.kill(9);
  expect(await c.proc.exited).not.toBe(0);
  expect(c.proc.signalCode).toBe("SIGKILL");
}

/** The newest committed checkpoint loads and equals the values saved at `step`. */
function expectAutoIs(out: string, step: number) {
  const dir = resolveLoadPath("auto", out)!;
  expect(dir).toBe(join(out, "checkpoints", `global_step_${step}`));
  const targets = [0, 1, 2].map((r) => fsdpPieces(units, 3, r, null));
  for (const t of targets) loadShard(dir, { expected: expectedShapes(units), targets: t });
  const got = assemble(targets);
  for (const [name, a] of fillModel(units, step)) expect({ name, diff: firstDiff(got.get(name)!, a) }).toEqual({ name, diff: -1 });
}

async function setup(tag: string): Promise<{ out: string; dir2: string }> {
  const out = join(tmp, tag);
  await saveAll(join(out, "checkpoints", "global_step_1"), 1, [0, 1].map((r) => fsdpPieces(units, 2, r, fillModel(units, 1))));
  return { out, dir2: join(out, "checkpoints", "global_step_2") };
}

async function rankReports(dir2: string): Promise<string[]> {
  return Promise.all([0, 1].map(async (r) => {
    const c = spawnChild(["rank", dir2, "2", "2", String(r), "none"]);
    const rep = await c.line("REPORT");
    expect(await c.proc.exited).toBe(0);
    return rep;
  }));
}

describe("kill -9 during a save", () => {
  for (const phase of ["staged", "writing"]) {
    test(`rank 1 killed ${phase === "staged" ? "after staging, before writing" : "while writing"}: step 1 stays the newest`, async () => {
      const { out, dir2 } = await setup(phase);
      const r0 = spawnChild(["rank", dir2, "2", "2", "0", "none"]);
      const r1 = spawnChild(["rank", dir2, "2", "2", "1", phase]);
      await killAt(r1, phase);
      await r0.line("REPORT");
      expect(await r0.proc.exited).toBe(0);
      if (phase === "writing") expect(readdirSync(dir2)).toContain("model_rank_00001.safetensors"); // a partial file exists
      expectAutoIs(out, 1);
    });
  }

  test("coordinator killed before the metadata rename: step 1 stays the newest", async () => {
    const { out, dir2 } = await setup("before");
    const c = spawnChild(["commit", dir2, "2", "2", ...(await rankReports(dir2)), "before_rename"]);
    await killAt(c, "before_rename");
    expect(readdirSync(dir2).some((n) => n.startsWith("metadata.json.tmp-"))).toBe(true);
    expect(existsSync(join(dir2, "metadata.json"))).toBe(false);
    expectAutoIs(out, 1);
  });

  test("coordinator killed right after the rename: step 2 is complete and loads", async () => {
    const { out, dir2 } = await setup("after");
    const c = spawnChild(["commit", dir2, "2", "2", ...(await rankReports(dir2)), "after_rename"]);
    await killAt(c, "after_rename");
    expectAutoIs(out, 2);
  });

  test("a clean commit prints COMMITTED", async () => {
    const { out, dir2 } = await setup("clean");
    const c = spawnChild(["commit", dir2, "2", "2", ...(await rankReports(dir2)), "none"]);
    await c.line("COMMITTED");
    expect(await c.proc.exited).toBe(0);
    expectAutoIs(out, 2);
  });
});
