// Adoption: a coordinator that takes over a job (`bun run coordinator --resume JOB`) whose ranks
// still run — workers started with `bun run worker`, which outlive their coordinator for
// launch.coordinator_grace_s — keeps them instead of restarting them:
//   1. the record says the job was running, and every rank's KV record is of the job's epoch E,
//      joined or running, heartbeating within dead_after_s (and, on this host, its pid alive);
//   2. the new coordinator writes the job record under epoch E+1 with `adopt_from: E` (the ranks
//      wait for it instead of taking the new epoch for a fence) and sends `adopt` {from E, epoch E+1}
//      until every rank answered `adopted` with its position, within dead_after_s;
//   3. the positions must be those one coordinator leaves (below); the new one re-issues step
//      `start` (ranks that finished it answer from their cached report), commits the saves the
//      ranks made that the old one had not committed, and goes on sequencing. No process restarts,
//      no step is redone or skipped.
// Anything else (a rank dead or of another epoch, no answer, positions apart) restarts every rank
// from the newest committed checkpoint under epoch E+2, which fences out whoever switched to E+1.
import { hostname } from "node:os";
import type { KV } from "@nats-io/kv";
import { keys, readJson, withTimeout, type JobState, type RankRecord } from "./nats.ts";
import { pidAlive } from "./orphans.ts";
import type { ToCoordinator } from "./protocol.ts";

export type Adopted = Extract<ToCoordinator, { kind: "adopted" }>;

/** An adoption that did not work out: the caller restarts the ranks from the newest commit. */
export class AdoptionFailed extends Error {}

/**
 * Why the ranks of `prev` cannot be adopted, or null when every one looks alive in its epoch.
 * Read from the rank records alone (no message is sent): a rank that fails later is found by the
 * adopt exchange.
 */
export async function whyNotAdoptable(kv: KV, prev: JobState, deadAfterS: number, now = Date.now()): Promise<string | null> {
  if (prev.phase !== "running") return `the job was in phase ${prev.phase}, not running`;
  const dead: string[] = [];
  for (let r = 0; r < prev.world_size; r++) {
    const rec = await withTimeout(readJson<RankRecord>(kv, keys.rank(prev.job, r)), 5000, `read ${keys.rank(prev.job, r)}`);
    if (!rec) dead.push(`rank ${r} has no record`);
    else if (rec.epoch !== prev.epoch) dead.push(`rank ${r} is of epoch ${rec.epoch}, not ${prev.epoch}`);
    else if (rec.status !== "joined" && rec.status !== "running") dead.push(`rank ${r} is ${rec.status}`);
    else if (rec.host === hostname() && !pidAlive(rec.pid)) dead.push(`rank ${r} (pid ${rec.pid}) is gone`);
    else if ((now - rec.heartbeat_ms) / 1000 > deadAfterS) dead.push(`rank ${r} has not heartbeaten for ${((now - rec.heartbeat_ms) / 1000).toFixed(1)} s`);
  }
  return dead.length ? dead.join("; ") : null;
}

/**
 * Where sequencing goes on from the ranks' answers. A coordinator sends step s only after every
 * rank reported s-1, so the ranks it leaves behind are each at one of: finished s, computing s,
 * or finished s-1 and not yet commanded s (the command still in flight). `start` is that s — the
 * newest step any rank finished or computes, or the first step of this process when none ran one
 * yet — and every rank must have finished at least s-1. Re-issuing s then finishes it everywhere
 * (ranks done answer from their cached report), and the metrics line of s is the first one to
 * write. `total`: the fewest steps any rank's data allows.
 */
export function planAdoption(replies: Adopted[], world: number): { start: number; total: number; canSave: boolean } {
  const missing = [...Array(world).keys()].filter((r) => !replies.some((a) => a.rank === r));
  if (missing.length) throw new AdoptionFailed(`rank(s) ${missing.join(", ")} did not answer the adopt command`);
  const start = Math.max(...replies.map((a) => Math.max(a.lastDone, a.running, a.firstStep)));
  const apart = replies.filter((a) => a.lastDone < start - 1 || (a.running !== -1 && a.running !== start));
  if (apart.length) {
    const pos = replies.map((a) => `rank ${a.rank}: finished step ${a.lastDone}${a.running >= 0 ? `, computing ${a.running}` : ""}`).join("; ");
    throw new AdoptionFailed(`the ranks' positions are apart (${pos})`);
  }
  return { start, total: Math.min(...replies.map((a) => a.totalSteps)), canSave: replies.every((a) => a.canSave) };
}
