// A coordinator that takes over a job whose coordinator died (`bun run coordinator --resume JOB`):
// the job record in KV says who ran it and at which epoch, the committed checkpoints in
// output_dir say where training stands. The new coordinator refuses while the old one is alive,
// takes the record over under the next epoch (stale workers are fenced by it), and the ranks
// restart from the newest committed checkpoint: the steps after it are redone, never lost, and
// their abandoned lines leave metrics.jsonl so each step appears once.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { basename, join } from "node:path";
import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import { keys, readJson, withTimeout, type JobState, type RankRecord } from "./nats.ts";

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // exists, another user's
  }
}

/** Whether process `pid` of this host is stopped (state T in /proc/PID/stat; false where unknown). */
function stopped(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return /^[Tt]$/.test(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
  } catch {
    return false;
  }
}

/**
 * The job's last record, if any, after checking its coordinator is gone: on this host its pid
 * no longer runs (or is stopped and its record quiet for `deadAfterS`); elsewhere the record went unwritten for `deadAfterS` (a live coordinator
 * touches it every heartbeat). Throws a one-line error naming the live coordinator otherwise.
 */
export async function previousRecord(kv: KV, job: string, deadAfterS: number): Promise<JobState | null> {
  const prev = await withTimeout(readJson<JobState>(kv, keys.state(job)), 5000, `read ${keys.state(job)}`);
  if (!prev) return null;
  const live = prev.phase === "rendezvous" || prev.phase === "running";
  if (!live) return prev;
  const c = prev.coordinator;
  const quietS = (Date.now() - Date.parse(prev.updated_at)) / 1000;
  // on this host a stopped process (SIGSTOP, a debugger) whose record went quiet is as dead as a
  // silent remote one: if it wakes, the newer epoch fences its commits out (checkpoint/commit.ts)
  const alive = c.host === hostname() ? pidAlive(c.pid) && c.pid !== process.pid && !(stopped(c.pid) && quietS >= deadAfterS) : quietS < deadAfterS;
  if (alive) throw new Error(`job ${job} is still run by coordinator pid ${c.pid} on ${c.host} (record updated ${quietS.toFixed(1)} s ago); stop it before resuming`);
  return prev;
}

/**
 * Why `--resume JOB` has nothing to take over, as one line naming the job and what was expected,
 * or null when it may go on. `kv`: the job's record in KV (null: none, or no NATS server to ask
 * yet: an embedded one starts with the job); `copy`: OUTPUT_DIR/job.json, the record's copy the
 * coordinator keeps beside the checkpoints (the one left when the NATS server's store is gone, as
 * after a Slurm requeue on other nodes). `where`: the places looked in, for the message.
 */
export function whyNotResumable(job: string, kv: JobState | null, copy: JobState | null, where: { kv: string | null; copy: string }): string | null {
  const rec = kv ?? (copy?.job === job ? copy : null);
  if (!rec) {
    const looked = [where.kv && `none in ${where.kv}`, copy ? `${where.copy} is the record of job ${copy.job}` : `no ${where.copy}`].filter(Boolean).join("; ");
    return `--resume ${job}: no record of job ${job} (${looked}): expected the id of a job that ran with this train.output_dir (or on this NATS server), whose coordinator died before its end`;
  }
  if (rec.phase === "done") {
    const from = kv ? where.kv : where.copy;
    return `--resume ${job}: job ${job} is done (step ${rec.step} of ${rec.max_steps}${rec.last_checkpoint ? `, last checkpoint ${rec.last_checkpoint}` : ""}; record in ${from}): nothing to resume; expected a job whose coordinator died or that failed or stopped before its end (to train it further: a new job with --train.load_checkpoint_path auto and a larger --train.max_steps)`;
  }
  return null;
}

/** The step a committed checkpoint folder `.../global_step_N` holds (0: none, training starts over). */
export function stepOf(checkpointDir: string | null): number {
  if (!checkpointDir) return 0;
  const m = /^global_step_(\d+)$/.exec(basename(checkpointDir));
  if (!m) throw new Error(`${checkpointDir}: expected a global_step_N checkpoint folder`);
  return Number(m[1]);
}

/** Drop metrics.jsonl lines of steps after `step` (work a dead coordinator's ranks did past the last commit). */
export function trimMetrics(outputDir: string, step: number): number {
  const file = join(outputDir, "metrics.jsonl");
  if (!existsSync(file)) return 0;
  const lines = readFileSync(file, "utf8").split("\n").filter(Boolean);
  const keep = lines.filter((l) => {
    try {
      return (JSON.parse(l) as { step: number }).step <= step;
    } catch {
      return false; // a line cut short by the kill
    }
  });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, keep.map((l) => l + "\n").join(""));
  renameSync(tmp, file);
  return lines.length - keep.length;
}

/**
 * Ranks of the dead coordinator's epochs still running on this host (a local worker that has not
 * noticed yet, one stuck in a collective): SIGKILL them, by the pid in their rank record when that
 * pid is still a veomni worker, and wait until they are gone, so none writes into output_dir
 * beside the new epoch. Ranks on other hosts are fenced by the new epoch instead (worker.ts).
 */
export async function stopStaleLocalRanks(kv: KV, job: string, world: number, log: Logger): Promise<number[]> {
  const killed: number[] = [];
  for (let r = 0; r < world; r++) {
    const rec = await withTimeout(readJson<RankRecord>(kv, keys.rank(job, r)), 5000, `read ${keys.rank(job, r)}`);
    if (!rec || rec.host !== hostname() || rec.pid === process.pid || !pidAlive(rec.pid)) continue;
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${rec.pid}/cmdline`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    if (!cmd.includes("worker_main")) continue; // the pid was reused by something else
    log.warn({ rank: r, pid: rec.pid, epoch: rec.epoch }, `stopping rank ${r} of epoch ${rec.epoch} (pid ${rec.pid}), left by the dead coordinator`);
    process.kill(rec.pid, "SIGKILL");
    killed.push(rec.pid);
  }
  // SIGKILL is not synchronous: wait until the kernel has taken them (bounded backoff, not a test wait)
  const t0 = Date.now();
  while (killed.some(pidAlive) && Date.now() - t0 < 10_000) await Bun.sleep(20);
  return killed;
}
