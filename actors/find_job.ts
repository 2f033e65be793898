// A worker started without --job joins the newest job waiting in rendezvous that has its rank
// (and the launcher's world size, when the launcher gave one).
// Watches `*.state` in KV: the watch first replays each key's last value, then follows updates
// (event-driven: no polling). A job whose record went quiet for a minute (a coordinator that
// died in rendezvous) is not a candidate: a live coordinator touches its state every heartbeat.
import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import type { JobState } from "./nats.ts";

const FRESH_MS = 60_000;

const waiting = (st: JobState) => st.phase === "rendezvous" && Date.now() - Date.parse(st.updated_at) < FRESH_MS;
const fits = (st: JobState, rank: number, world: number | undefined) => waiting(st) && rank < st.world_size && (world === undefined || world === st.world_size);

/** `world`: the launcher's world size, when it gave one: only a job of that size is a candidate. */
export async function findJob(kv: KV, rank: number, log: Logger, world?: number): Promise<string> {
  const w = await kv.watch({ key: "*.state" });
  let best: JobState | null = null;
  let tooSmall: JobState | null = null; // a job waiting for workers whose world has no such rank
  let announced = false;
  for await (const e of w) {
    if (e.operation === "PUT") {
      const st = e.json<JobState>();
      if (fits(st, rank, world) && (!best || st.updated_at > best.updated_at)) best = st;
      else if (waiting(st) && (!tooSmall || st.updated_at > tooSmall.updated_at)) tooSmall = st;
    }
    const caughtUp = e.isUpdate || e.delta === 0;
    if (caughtUp && best) break;
    if (caughtUp && tooSmall) {
      w.stop();
      throw new Error(`--rank ${rank}: job ${tooSmall.job} is waiting for workers but has launch.world_size ${tooSmall.world_size} (ranks 0..${tooSmall.world_size - 1})`);
    }
    if (caughtUp && !announced) {
      log.info({ rank }, "no job in rendezvous yet; waiting for a coordinator");
      announced = true;
    }
  }
  w.stop();
  if (!best) throw new Error(`worker rank ${rank}: KV watch ended before any job was in rendezvous`);
  log.info({ job: best.job, rank }, "found job");
  return best.job;
}
