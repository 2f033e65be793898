// A KV watch for liveness: started over when it goes quiet, and a direct read to confirm silence.
// Why: a KV watch is an ordered push consumer on the bucket's stream leader. When the server that
// leads the stream dies, the watch delivers nothing until nats.js misses its idle heartbeats (5 s
// each, not settable through kv.watch) and re-creates the consumer on the new leader: measured
// over 20 s on a loaded host, longer than launch.dead_after_s. A quiet watch therefore proves
// nothing; liveness is judged on the key's revision as a direct `kv.get` returns it.
import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "pino";
import { withTimeout } from "./nats.ts";

/** How long a read or a watch creation may take before it counts as unanswered (ms). */
const OP_MS = 2000;

export interface LiveWatchOptions {
  /** what the log calls it ("rank heartbeat watch"). */
  what: string;
  /** key or wildcard watched. */
  key: string;
  /** nothing new delivered for this long (ms): start the watch over. The watched keys are written
   *  every heartbeat, so a few heartbeat periods of quiet mean a stalled consumer or dead writers. */
  quietMs: number;
  /** the quiet allowed doubles on each restart that brings nothing new, up to this (ms). */
  maxQuietMs: number;
  /** each entry newer than any seen before for its key (a restarted watch repeats the last values). */
  onEntry: (e: KvEntry) => void;
  /** the connection is closed for good: the watch ends (it is not started over). */
  closed: () => boolean;
  log: Logger;
}

export interface LiveWatch {
  /** newest revision seen for `key` (watch or `confirm`), 0 if none. */
  revision(key: string): number;
  /**
   * Read `key` directly (not through the watch). Returns the entry when its revision is newer than
   * any seen (it is then also passed to onEntry), "same" when it is not and the stream can take
   * writes, "unanswered" when the read failed or the stream has no leader (an election, NATS
   * unreachable): then nobody could have written, and nothing is known.
   */
  confirm(key: string): Promise<"newer" | "same" | "unanswered">;
  stop(): void;
}

export function liveWatch(kv: KV, o: LiveWatchOptions): LiveWatch {
  const seen = new Map<string, number>(); // key -> newest revision
  let stopped = false;
  let current: { stop(): void } | null = null;
  let lastNew = Date.now(); // ms: when something new last arrived, or the watch last restarted
  let quiet = o.quietMs;

  const offer = (e: KvEntry): boolean => {
    if (stopped || e.revision <= (seen.get(e.key) ?? 0)) return false;
    seen.set(e.key, e.revision);
    lastNew = Date.now();
    quiet = o.quietMs;
    o.onEntry(e);
    return true;
  };

  void (async () => {
    let wait = 50; // ms: backoff while the watch cannot be created (no stream leader yet)
    while (!stopped && !o.closed()) {
      try {
        const w = await kv.watch({ key: o.key });
        if (stopped) {
          w.stop();
          break;
        }
        current = w;
        wait = 50;
        for await (const e of w) offer(e);
      } catch (e) {
        if (stopped || o.closed()) break;
        o.log.debug({ err: String(e) }, `${o.what}: could not (re)start; retrying`);
        await Bun.sleep(wait); // backoff while the bucket has no leader (not a test wait)
        wait = Math.min(wait * 2, 1000);
      }
    }
  })();

  const tick = setInterval(() => {
    if (stopped || o.closed() || Date.now() - lastNew <= quiet) return;
    // info once per quiet spell after something came, else debug: writers not started yet, or
    // busy in a long step, are quiet too
    o.log[quiet === o.quietMs && seen.size > 0 ? "info" : "debug"]({ quiet_ms: quiet }, `${o.what}: nothing new for ${(quiet / 1000).toFixed(1)} s; starting it over (its stream leader may have changed)`);
    lastNew = Date.now();
    quiet = Math.min(quiet * 2, o.maxQuietMs);
    current?.stop(); // ends the for-await above, which creates a new watch
    current = null;
  }, Math.max(100, o.quietMs / 4));

  return {
    revision: (key) => seen.get(key) ?? 0,
    async confirm(key) {
      let e: KvEntry | null;
      try {
        e = await withTimeout(kv.get(key), OP_MS, `get ${key}`);
      } catch {
        return "unanswered";
      }
      if (e && offer(e)) return "newer";
      // No write since the last one seen. While the stream has no leader (an election: nats-server
      // waits 4-9 s before it starts one) nobody can write, so that silence proves nothing; a
      // direct get is answered by any replica, so ask the stream itself.
      try {
        const st = await withTimeout(kv.status(), OP_MS, `status of ${key}'s bucket`);
        if (st.streamInfo.config.num_replicas > 1 && !st.streamInfo.cluster?.leader) return "unanswered";
      } catch {
        return "unanswered";
      }
      return "same";
    },
    stop() {
      stopped = true;
      clearInterval(tick);
      current?.stop();
    },
  };
}
