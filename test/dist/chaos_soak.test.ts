// The chaos soak's core at CI size: 2 ranks of `bun run worker` processes (the driver is their
// launcher), a worker killed with -9 (the coordinator restarts the job from the last commit, the
// launcher starts the killed and the stopped workers again), then the coordinator killed with -9
// (`coordinator --resume` adopts the live ranks). Every kill survived, no committed byte lost,
// and the final parameters and every step's loss equal an uninterrupted run's bit for bit.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { chaosConfig, writeChaosModel } from "../../tools/chaos/job.ts";
import { planKills, soak, type PlannedKill } from "../../tools/chaos/soak.ts";
import { weightsDiffer } from "../../tools/bench/chaos.ts";
import { natsServerForFile } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";

const server = natsServerForFile();

test("planKills: seeded, ascending steps inside the run, exactly one coordinator kill", () => {
  const a = planKills(42, 6, 100, 4, 500);
  expect(planKills(42, 6, 100, 4, 500)).toEqual(a);
  expect(planKills(43, 6, 100, 4, 500)).not.toEqual(a);
  expect(a.filter((k) => k.target === "coordinator").length).toBe(1);
  expect(a.map((k) => k.atStep)).toEqual([...a.map((k) => k.atStep)].sort((x, y) => x - y));
  for (const k of a) {
    expect(k.atStep).toBeGreaterThanOrEqual(2);
    expect(k.atStep).toBeLessThanOrEqual(98);
    expect(k.delayMs).toBeLessThan(500);
    if (k.target !== "coordinator") expect(k.target.rank).toBeLessThan(4);
  }
  expect(planKills(1, 3, 50, 2, 100, false).some((k) => k.target === "coordinator")).toBe(false);
});

test("a worker and the coordinator killed with -9 mid-job: both survived, 0 bytes lost, bitwise equal to the uninterrupted run", async () => {
  const dir = tempDir("chaos");
  // 6 steps, a commit every 2: the worker dies after step 3 (the restart resumes from step 2), the
  // coordinator after step 4 of the restarted epoch (steps 5-6, a save and the export still to come)
  const steps = 6;
  const model = writeChaosModel(join(dir, "model"), steps * 2 * 2 + 32);
  const job = (tag: string) => chaosConfig({ model, out: join(dir, `out-${tag}`), jobId: `chaos-${tag}`, ranks: 2, steps, saveSteps: 2, natsUrl: server.url, natsToken: server.token, maxRestarts: 2 });
  const run = (tag: string, kills: PlannedKill[]) => soak({ config: job(tag), natsToken: server.token, kills, logDir: join(dir, "logs"), stallS: 120 });

  // the uninterrupted reference and the chaos run side by side (separate jobs, processes and
  // folders; both wait mostly on process starts and restarts, so together they take little longer than one)
  const [ref, ch] = await Promise.all([
    run("ref", []),
    run("chaos", [
      { atStep: 3, delayMs: 0, target: { rank: 1 } },
      { atStep: 4, delayMs: 0, target: "coordinator" },
    ]),
  ]);
  expect(ref).toMatchObject({ ok: true, error: null, finalStep: steps, restarts: 0, adoptions: 0, workerStarts: 2, coordinatorStarts: 1 });
  if (!ch.ok) throw new Error(`chaos run failed: ${ch.error} (logs in ${dir}/logs)`);
  expect(ch.kills.map((k) => k.outcome)).toEqual(["restarted", "adopted"]);
  expect(ch).toMatchObject({ finalStep: steps, survived: 2, restarts: 1, adoptions: 1, committedBytesLost: 0, lostDetail: [], coordinatorStarts: 2 });
  expect(ch.commits).toBeGreaterThanOrEqual(steps / 2);
  // the killed rank and the one the restart stopped started again (more when a new process was
  // refused by the dying epoch's rendezvous and started once more, as a launcher does)
  expect(ch.workerStarts).toBeGreaterThanOrEqual(4);
  // a commit was in place when the worker died (step >= 3, saves every 2): only the steps since the newest commit are redone
  expect(ch.stepsRedone).toBeLessThanOrEqual(4);
  const hf = (tag: string) => join(dir, `out-${tag}`, "checkpoints", `global_step_${steps}`, "hf_ckpt", "model.safetensors");
  expect(weightsDiffer(hf("chaos"), hf("ref"))).toBeNull();
  const lines = (tag: string) => readFileSync(join(dir, `out-${tag}`, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const [a, b] = [lines("chaos"), lines("ref")];
  expect(a.map((m) => m.step)).toEqual(Array.from({ length: steps }, (_, i) => i + 1));
  expect(a.map((m) => [m.loss, m.grad_norm])).toEqual(b.map((m) => [m.loss, m.grad_norm]));
}, 240_000);
