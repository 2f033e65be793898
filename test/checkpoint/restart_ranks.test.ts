// One-for-all restart with real rank processes: 2 DDP or FSDP ranks over the mesh's TCP ring, each with
// its RankCheckpointer; this test plays the coordinator (CommitTracker commits when both ranks'
// durable reports are in, actors/supervision.ts decides). Rank 1 is killed -9 mid-step 3; every
// rank is stopped; a new epoch resumes both from the last commit; the final parameters are
// bitwise those of an uninterrupted run.
import { afterAll, expect, test, setDefaultTimeout } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { decide } from "../../actors/supervision.ts";
import { CommitTracker, type RankReport, resolveLoadPath } from "../../checkpoint/index.ts";
import { writeData } from "./dp_local.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const tmp = tempDir("ranks");
const alive = new Set<ReturnType<typeof Bun.spawn>>();
afterAll(() => {
  for (const p of alive) p.kill(9);
});
const WORLD = 2, STEPS = 6, SAVE = 2;
type Ev = { rank: number; ev: string; [k: string]: any };

/** Starts WORLD rank processes for one epoch, does the rendezvous, commits their saves. */
async function epoch(mode: "ddp" | "fsdp", out: string, data: string, n: number, resumeFrom: string | null, parkAt?: number) {
  const tracker = new CommitTracker({ outputDir: out, worldSize: WORLD, mesh: { dp_replicate: WORLD }, epoch: n });
  const events: Ev[] = [];
  const waiters: { pred: (e: Ev) => boolean; wake: (e: Ev) => void }[] = [];
  const next = (pred: (e: Ev) => boolean) => new Promise<Ev>((wake) => {
    const seen = events.find(pred);
    if (seen) wake(seen);
    else waiters.push({ pred, wake });
  });
  const procs = [...Array(WORLD).keys()].map((rank) => {
    const cfg = { rank, world: WORLD, mode, out, data, steps: STEPS, save: SAVE, epoch: n, resumeFrom, parkAt };
    const p = Bun.spawn([process.execPath, join(import.meta.dir, "rank_child.ts"), JSON.stringify(cfg)], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
    alive.add(p);
    void p.exited.then(() => alive.delete(p));
    void (async () => {
      let buf = "";
      for await (const chunk of p.stdout as ReadableStream<Uint8Array>) {
        buf += new TextDecoder().decode(chunk);
        for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1)) {
          const e = JSON.parse(buf.slice(0, i)) as Ev;
          if (e.ev === "saved") {
            if (!tracker.inFlight.includes(e.report.step)) tracker.begin(e.report.step);
            const c = tracker.onReport(n, e.report as RankReport);
            if (c) events.push({ rank: -1, ev: `commit_${c.kind}`, step: c.step });
          }
          events.push(e);
          for (const w of waiters.filter((w) => w.pred(e))) w.wake(e);
        }
      }
    })();
    return p;
  });
  const addrs = await Promise.all(procs.map((_, r) => next((e) => e.rank === r && e.ev === "listening")));
  for (const p of procs) {
    p.stdin!.write(JSON.stringify({ table: addrs.map((a) => a.address) }) + "\n");
    p.stdin!.flush();
  }
  return { procs, events, next };
}

const lossBits = (events: Ev[]) => events.filter((e) => e.ev === "loss" && e.rank === 0).map((e) => e.bits);

for (const mode of ["ddp", "fsdp"] as const) test(`${mode}, 2 ranks: kill -9 of rank 1 mid-step, stop all, restart under a new epoch from the last commit`, async () => {
  const data = join(tmp, `data_${mode}.jsonl`);
  await writeData(data);
  const ref = await epoch(mode, join(tmp, `ref_${mode}`), data, 1, null);
  expect(await Promise.all(ref.procs.map((p) => p.exited))).toEqual([0, 0]);
  expect(ref.events.filter((e) => e.ev.startsWith("commit")).map((e) => e.step)).toEqual([2, 4, 6]);

  const out = join(tmp, `job_${mode}`);
  const first = await epoch(mode, out, data, 1, null, 3);
  await first.next((e) => e.ev === "parked");
  first.procs[1].kill(9);
  // One-for-all: the coordinator stops every rank as soon as one is lost.
  const lost = await first.procs[1].exited;
  for (const p of first.procs) p.kill(9);
  await Promise.all(first.procs.map((p) => p.exited));
  expect(first.procs[1].signalCode).toBe("SIGKILL");
  const last = resolveLoadPath("auto", out);
  expect(last).toBe(join(out, "checkpoints", "global_step_2"));
  const d = decide({ kind: "exited", rank: 1, pid: first.procs[1].pid, code: lost, signal: "SIGKILL", stderrTail: "" }, { restarts: 0, maxRestarts: 2, lastCheckpoint: last });
  expect(d.action).toBe("restart");

  const second = await epoch(mode, out, data, 2, last);
  expect(await Promise.all(second.procs.map((p) => p.exited))).toEqual([0, 0]);
  expect(second.events.filter((e) => e.ev === "resumed").map((e) => e.step)).toEqual([2, 2]);
  expect(lossBits(second.events)).toEqual(lossBits(ref.events).slice(2));
  for (const r of [0, 1]) {
    expect(readFileSync(join(out, `final_rank${r}.f32`)).equals(readFileSync(join(tmp, `ref_${mode}`, `final_rank${r}.f32`)))).toBe(true);
  }
}, 60_000);
