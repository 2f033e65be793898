// Jobs whose coordinator died without recording an end (kill -9, a lost host): their KV record
// still says "rendezvous" or "running" and would for ever. A later coordinator on the same NATS,
// `bun run jobs`, or `coordinator --resume` calls markOrphanedJobFailed: if the coordinator is
// gone (its pid is dead on this host, or it has not touched the record for long), the record is
// set to "failed" with the reason, by compare-and-set on the revision read (a live coordinator's
// concurrent write wins). Ranks are judged the same way for display (rankLiveness). A job whose
// ranks still heartbeat within launch.coordinator_grace_s is not marked: they wait to be adopted.
import { existsSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import type { KV } from "@nats-io/kv";
import { keys, readJson, toJson, type JobState, type RankRecord } from "./nats.ts";

/** Silence after which a remote coordinator counts as gone: its record is touched every
 *  heartbeat_s; twice the workers' own deadline, and never under 30 s (clock skew between hosts). */
export function staleAfterS(deadAfterS: number): number {
  return Math.max(2 * deadAfterS, 30);
}

/** A process of this host runs with that pid (a zombie, dead but not reaped yet, does not). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPERM") return false; // EPERM: exists, someone else's
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "")[0] !== "Z";
  } catch {
    return !existsSync("/proc/self/stat"); // no procfs (not Linux): trust kill(0)
  }
}

const live = (phase: JobState["phase"]) => phase === "rendezvous" || phase === "running";

/** Why this job's coordinator is gone, or null while it may be alive (or the job has ended). */
export function coordinatorGone(st: JobState, deadAfterS: number, now = Date.now()): string | null {
  if (!live(st.phase)) return null;
  const c = st.coordinator;
  if (c.host === hostname() && !pidAlive(c.pid)) return `coordinator pid ${c.pid} on ${c.host} is gone (killed?) and never recorded an end`;
  const silentS = (now - Date.parse(st.updated_at)) / 1000;
  if (silentS > staleAfterS(deadAfterS)) return `coordinator pid ${c.pid} on ${c.host} has not updated the job for ${silentS.toFixed(0)} s (stale after ${staleAfterS(deadAfterS)} s)`;
  return null;
}

/** A rank's status as a reader should see it: "dead (...)" when its process is gone or silent. */
export function rankLiveness(r: RankRecord, deadAfterS: number, now = Date.now()): string {
  if (r.status !== "joined" && r.status !== "running") return r.status;
  if (r.host === hostname() && !pidAlive(r.pid)) return `dead (pid ${r.pid} gone)`;
  const silentS = (now - r.heartbeat_ms) / 1000;
  if (silentS > deadAfterS) return `dead (no heartbeat for ${silentS.toFixed(0)} s)`;
  return r.status;
}

async function launchOf(kv: KV, job: string): Promise<{ deadAfterS: number; graceS: number }> {
  const cfg = await readJson<{ launch?: { dead_after_s?: number; coordinator_grace_s?: number } }>(kv, keys.config(job)).catch(() => null);
  return { deadAfterS: cfg?.launch?.dead_after_s ?? 15, graceS: cfg?.launch?.coordinator_grace_s ?? 300 };
}

/**
 * Ranks of the job's epoch still heartbeating while its coordinator is gone, within the grace they
 * wait for a `coordinator --resume` to adopt them (worker.ts): the job is not over yet.
 */
async function awaitingAdoption(kv: KV, st: JobState, l: { deadAfterS: number; graceS: number }, now: number): Promise<boolean> {
  if ((now - Date.parse(st.updated_at)) / 1000 > l.graceS) return false;
  for (let r = 0; r < st.world_size; r++) {
    const rec = await readJson<RankRecord>(kv, keys.rank(st.job, r)).catch(() => null);
    if (rec && rec.epoch === st.epoch && rankLiveness(rec, l.deadAfterS, now) === rec.status && (rec.status === "joined" || rec.status === "running")) return true;
  }
  return false;
}

/**
 * If `job`'s coordinator is gone while the record says it runs, record phase "failed" with the
 * reason (CAS on the revision read). Returns the state written, or null when nothing was changed
 * (no such job, it ended, its coordinator looks alive, or a live writer got there first).
 */
export async function markOrphanedJobFailed(kv: KV, job: string, by: string, now = Date.now()): Promise<JobState | null> {
  const e = await kv.get(keys.state(job));
  if (!e || e.operation !== "PUT" || e.length === 0) return null;
  const st = e.json<JobState>();
  const l = await launchOf(kv, job);
  const why = coordinatorGone(st, l.deadAfterS, now);
  if (!why || (await awaitingAdoption(kv, st, l, now))) return null;
  const next: JobState = { ...st, phase: "failed", error: `${why}; marked failed by ${by}`, updated_at: new Date(now).toISOString() };
  try {
    await kv.update(keys.state(job), toJson(next), e.revision);
  } catch (err) {
    if (/wrong last sequence/i.test(String(err))) return null; // written meanwhile: someone is alive
    throw err;
  }
  return next;
}

/** Every job in the bucket whose coordinator is gone (but `except`), marked failed; returns those marked. */
export async function markOrphanedJobs(kv: KV, by: string, except?: string): Promise<JobState[]> {
  const out: JobState[] = [];
  const names: string[] = [];
  for await (const k of await kv.keys("*.state")) names.push(k);
  for (const k of names) {
    if (k === `${except}.state`) continue;
    const st = await markOrphanedJobFailed(kv, k.slice(0, -".state".length), by);
    if (st) out.push(st);
  }
  return out;
}
