// The chaos soak's core (`bun run bench chaos`, test/dist/chaos_soak.test.ts): one job run through
// the real commands — `bun run coordinator --config`, `bun run worker --rank r --job J` per rank,
// a nats-server — while SIGKILL lands on random workers and on the coordinator at random moments.
// This driver plays the parts a cluster plays: a launcher that starts each rank's worker again
// when it ends before the job did (Slurm --requeue, a Kubernetes pod's restart), and an operator
// that runs `bun run coordinator --resume JOB` when the coordinator dies. The coordinator restarts
// ranks itself (launch.max_restarts); live ranks are adopted by the resumed coordinator.
//
// It watches the job record in KV and reports: kills done and survived, restarts (epochs that
// start from a checkpoint), adoptions, steps redone (steps finished before a kill that had to be
// computed again), and bytes of committed state lost (commits gone or changed at the end, or
// skipped over by a restart that went back further than the newest commit: 0 is the target).
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Config } from "../../configs/index.ts";
import { connectNats, keys, openBucket, type JobState } from "../../actors/nats.ts";
import { mulberry32 } from "../../data/rng.ts";

type Proc = Pick<Subprocess, "pid" | "exited" | "kill">;

const ROOT = new URL("../../", import.meta.url).pathname;
const COORDINATOR = join(ROOT, "actors/coordinator_main.ts");
const WORKER = join(ROOT, "actors/worker_main.ts");

export type KillTarget = "coordinator" | { rank: number };

export interface PlannedKill {
  /** armed once the job has finished this many steps (and recovered from the previous kill) */
  atStep: number;
  /** then SIGKILL after this many milliseconds: a random moment of a step, a save or a commit */
  delayMs: number;
  target: KillTarget;
}

/**
 * `kills` kills at random steps in [2, steps - 2] (ascending), each after a random delay below
 * `maxDelayMs`; one of them (at a random position) kills the coordinator when `coordinator`, the
 * others a random rank's worker.
 */
export function planKills(seed: number, kills: number, steps: number, ranks: number, maxDelayMs: number, coordinator = true): PlannedKill[] {
  const r = mulberry32(seed);
  const lo = 2, hi = Math.max(lo, steps - 2);
  const at = Array.from({ length: kills }, () => lo + Math.floor(r() * (hi - lo + 1))).sort((a, b) => a - b);
  const coordAt = coordinator && kills > 0 ? Math.floor(r() * kills) : -1;
  return at.map((atStep, i) => ({ atStep, delayMs: Math.floor(r() * maxDelayMs), target: i === coordAt ? "coordinator" : { rank: Math.floor(r() * ranks) } }));
}

export const describeKill = (k: PlannedKill) => `at step >= ${k.atStep} + ${k.delayMs} ms: ${k.target === "coordinator" ? "the coordinator" : `worker rank ${k.target.rank}`}`;

export interface SoakOptions {
  /** the job: launch.nats, launch.job_id, launch.local_workers 0, train.output_dir set */
  config: Config;
  natsToken: string;
  kills: PlannedKill[];
  /** where the config file and every process's stderr go */
  logDir: string;
  log?: (line: string) => void;
  /** give up when the job record shows no change for this long (a hang is a failed soak) */
  stallS?: number;
}

export interface KillDone {
  kill: PlannedKill;
  atStep: number;
  epoch: number;
  pid: number;
  /** what the job did about it: "restarted" (a new epoch from a checkpoint), "adopted" (the
   *  resumed coordinator kept the ranks), or "none seen" (the job ended first) */
  outcome: string;
}

export interface SoakResult {
  ok: boolean;
  error: string | null;
  finalStep: number;
  maxSteps: number;
  kills: KillDone[];
  /** kills after which the job went on to its end */
  survived: number;
  /** epochs that started from a checkpoint (the coordinator's restarts and --resume's restart path) */
  restarts: number;
  /** epochs whose coordinator adopted the live ranks */
  adoptions: number;
  /** steps finished before a restart, after the checkpoint it resumed from: computed twice */
  stepsRedone: number;
  /** commits seen during the run */
  commits: number;
  committedBytes: number;
  committedBytesLost: number;
  lostDetail: string[];
  /** worker processes started in all (world_size at the start, then the launcher's restarts) */
  workerStarts: number;
  coordinatorStarts: number;
  wallS: number;
}

interface Commit {
  step: number;
  dir: string;
  files: Map<string, { bytes: number; sha: string }>;
}

function snapshotCommit(dir: string, step: number): Commit | null {
  if (!existsSync(join(dir, "metadata.json"))) return null;
  const files = new Map<string, { bytes: number; sha: string }>();
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (!statSync(p).isFile()) continue; // hf_ckpt/ is an export, not training state
    const b = readFileSync(p);
    files.set(name, { bytes: b.length, sha: createHash("sha256").update(b).digest("hex") });
  }
  return { step, dir, files };
}

const bytesOf = (c: Commit) => [...c.files.values()].reduce((a, f) => a + f.bytes, 0);
const stepOfDir = (rel: string | null) => (rel ? Number(/global_step_(\d+)$/.exec(rel)?.[1] ?? 0) : 0);

/** Committed folders on disk now (metadata.json written). */
function commitsOnDisk(outputDir: string): number[] {
  const root = join(outputDir, "checkpoints");
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((n) => /^global_step_(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && existsSync(join(root, m[0], "metadata.json")))
    .map((m) => Number(m[1]));
}

export async function soak(o: SoakOptions): Promise<SoakResult> {
  const t0 = performance.now();
  const c = o.config;
  const job = c.launch.job_id!;
  const out = c.train.output_dir!;
  const natsUrl = c.launch.nats!;
  const log = o.log ?? (() => {});
  mkdirSync(o.logDir, { recursive: true });
  const cfgFile = join(o.logDir, `${job}.yaml`);
  writeFileSync(cfgFile, JSON.stringify(c)); // JSON is YAML
  const env = { ...(process.env as Record<string, string>), VEOMNI_NATS_TOKEN: o.natsToken };
  let seq = 0;
  const start = (what: string, args: string[]): Proc =>
    Bun.spawn([process.execPath, ...args], { env, stdin: "ignore", stdout: "ignore", stderr: Bun.file(join(o.logDir, `${job}-${String(seq++).padStart(3, "0")}-${what}.log`)) });

  const res: SoakResult = {
    ok: false, error: null, finalStep: 0, maxSteps: 0, kills: [], survived: 0, restarts: 0, adoptions: 0, stepsRedone: 0,
    commits: 0, committedBytes: 0, committedBytesLost: 0, lostDetail: [], workerStarts: 0, coordinatorStarts: 0, wallS: 0,
  };
  let ended = false; // the job reached an end (done, or failed: the soak stops then)
  let endError: string | null = null;
  let wake = () => {};
  const changed = () => wake();

  // ---- the coordinator, and its resumption when it is killed
  let coord!: Proc;
  let coordKilled = false;
  const startCoordinator = (args: string[]) => {
    res.coordinatorStarts++;
    coord = start("coordinator", [COORDINATOR, ...args]);
    const me = coord;
    void me.exited.then((code) => {
      if (me !== coord) return;
      if (coordKilled) return; // ours: the resumption is started by the kill
      if (code !== 0 && !ended) {
        endError = `coordinator pid ${me.pid} exited with code ${code} (see ${o.logDir})`;
        ended = true;
      }
      changed();
    });
  };

  // ---- the launcher: one worker per rank, started again when it ends before the job did
  const procs: Array<Proc | null> = [];
  const launch = (rank: number) => {
    res.workerStarts++;
    const p = start(`worker${rank}`, [WORKER, "--rank", String(rank), "--nats", natsUrl, "--job", job]);
    procs[rank] = p;
    void p.exited.then(async (code) => {
      if (procs[rank] !== p) return;
      procs[rank] = null;
      if (ended || code === 0) return changed(); // 0: the job is done
      await Bun.sleep(250); // a launcher's restart back-off (not a wait for an event)
      if (!ended) launch(rank);
      changed();
    });
  };

  const { nc, kv } = await (async () => {
    const nc = await connectNats({ url: natsUrl, token: o.natsToken, name: "veomni-chaos" });
    return { nc, kv: await openBucket(nc) };
  })();
  startCoordinator(["--config", cfgFile]);
  for (let r = 0; r < c.launch.world_size; r++) launch(r);

  // ---- the job record: progress, epochs, commits
  const commits = new Map<number, Commit>();
  let st: JobState | null = null;
  const current = (): JobState | null => st;
  let epoch = 0;
  let maxStep = 0;
  let lastChange = Date.now();
  const epochStart = new Map<number, number>(); // epoch -> step when first seen
  const transitions: Array<{ from: number; how: "restarted" | "adopted" }> = [];
  const recordCommits = () => {
    for (const step of commitsOnDisk(out)) {
      if (commits.has(step)) continue;
      const snap = snapshotCommit(join(out, "checkpoints", `global_step_${step}`), step);
      if (snap) commits.set(step, snap);
    }
  };
  const watch = await kv.watch({ key: keys.state(job) });
  void (async () => {
    for await (const e of watch) {
      if (e.operation !== "PUT") continue;
      const s = e.json<JobState>();
      lastChange = Date.now();
      if (s.epoch > epoch) {
        epochStart.set(s.epoch, s.step);
        if (epoch > 0 && s.phase === "rendezvous") {
          // a restart: its ranks resume from last_checkpoint; what was finished past it is redone
          res.restarts++;
          transitions.push({ from: epoch, how: "restarted" });
          recordCommits();
          const from = stepOfDir(s.last_checkpoint);
          res.stepsRedone += Math.max(0, maxStep - from);
          for (const [step, cm] of commits) {
            if (step > from) {
              res.committedBytesLost += bytesOf(cm);
              res.lostDetail.push(`epoch ${s.epoch} resumed from step ${from}, skipping committed ${cm.dir}`);
            }
          }
          maxStep = from;
        }
        epoch = s.epoch;
      }
      if (s.adopt_from === undefined && st?.adopt_from !== undefined && s.epoch === st.epoch && s.phase === "running") {
        res.adoptions++;
        transitions.push({ from: st.adopt_from, how: "adopted" });
      }
      if (s.last_checkpoint !== st?.last_checkpoint) recordCommits();
      maxStep = Math.max(maxStep, s.step);
      st = s;
      if (s.phase === "done" || s.phase === "failed" || s.phase === "stopped") {
        if (s.phase !== "done") endError = `the job ${s.phase}: ${s.error}`;
        ended = true;
      }
      changed();
    }
  })().catch((e) => {
    endError = `job record watch failed: ${String(e)}`;
    ended = true;
    changed();
  });

  const nextChange = () => new Promise<void>((r) => (wake = r));
  const stallMs = (o.stallS ?? 300) * 1000;
  const stall = setInterval(() => {
    if (!ended && Date.now() - lastChange > stallMs) {
      endError = `no change of ${keys.state(job)} for ${o.stallS ?? 300} s (step ${st?.step}, phase ${st?.phase}, epoch ${st?.epoch})`;
      ended = true;
      changed();
    }
  }, 1000);

  try {
    // ---- the kills, one after another, each once the job recovered from the one before
    let killEpoch = 0;
    for (const k of o.kills) {
      // armed: running under an epoch after the last kill's, with a step finished in it
      const armed = (s: JobState | null) => s !== null && s.phase === "running" && s.epoch > killEpoch && s.step >= k.atStep && s.step > (epochStart.get(s.epoch) ?? Infinity);
      while (!ended && !armed(current())) await nextChange();
      if (ended) break;
      await Bun.sleep(k.delayMs); // the random moment (chaos, not a wait for an event)
      if (ended) break;
      const at = current()!.step;
      killEpoch = current()!.epoch;
      if (k.target === "coordinator") {
        const victim = coord;
        coordKilled = true;
        victim.kill("SIGKILL");
        await victim.exited;
        log(`kill ${res.kills.length + 1}/${o.kills.length} at step ${at} (epoch ${killEpoch}): coordinator pid ${victim.pid} SIGKILL; bun run coordinator --resume ${job}`);
        res.kills.push({ kill: k, atStep: at, epoch: killEpoch, pid: victim.pid, outcome: "" });
        coordKilled = false;
        startCoordinator(["--resume", job, "--launch.nats", natsUrl]);
      } else {
        const p = procs[k.target.rank];
        if (!p) {
          // between two of its processes (the launcher restarting it): the next one is the victim
          while (!ended && !procs[k.target.rank]) await nextChange();
          if (ended) break;
        }
        const victim = procs[k.target.rank]!;
        victim.kill("SIGKILL");
        log(`kill ${res.kills.length + 1}/${o.kills.length} at step ${at} (epoch ${killEpoch}): worker rank ${k.target.rank} pid ${victim.pid} SIGKILL`);
        res.kills.push({ kill: k, atStep: at, epoch: killEpoch, pid: victim.pid, outcome: "" });
      }
    }
    while (!ended) await nextChange();
    // the coordinator ends after recording the end: its exit code is the verdict
    const code = await coord.exited;
    if (code !== 0 && !endError) endError = `coordinator exited with code ${code}`;
    // the workers end on the job's end; one the launcher started just before it would wait for a rendezvous
    const left = setTimeout(() => procs.forEach((p) => p?.kill("SIGKILL")), 30_000);
    await Promise.all(procs.map((p) => p?.exited));
    clearTimeout(left);
  } finally {
    clearInterval(stall);
    watch.stop();
    if (endError) {
      coord.kill("SIGKILL");
      for (const p of procs) p?.kill("SIGKILL");
      await Promise.all([coord.exited, ...procs.map((p) => p?.exited)]);
    }
    await nc.close();
  }

  // ---- the verdict
  recordCommits();
  for (const cm of commits.values()) {
    const now = snapshotCommit(cm.dir, cm.step);
    const changedFiles = now ? [...cm.files].filter(([n, f]) => now.files.get(n)?.sha !== f.sha).map(([n]) => n) : [...cm.files.keys()];
    if (changedFiles.length) {
      res.committedBytesLost += changedFiles.reduce((a, n) => a + cm.files.get(n)!.bytes, 0);
      res.lostDetail.push(`${cm.dir}: ${now ? `changed ${changedFiles.join(", ")}` : "gone"}`);
    }
  }
  res.commits = commits.size;
  res.committedBytes = [...commits.values()].reduce((a, cm) => a + bytesOf(cm), 0);
  const fin = st as JobState | null;
  res.finalStep = fin?.step ?? 0;
  res.maxSteps = fin?.max_steps ?? 0;
  res.error = endError;
  res.ok = endError === null && fin?.phase === "done";
  for (const kd of res.kills) {
    const next = transitions.find((t) => t.from >= kd.epoch);
    kd.outcome = next ? next.how : "none seen";
  }
  res.survived = res.ok ? res.kills.length : 0;
  res.wallS = (performance.now() - t0) / 1000;
  return res;
}
