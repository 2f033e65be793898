// Chrome-trace profiles (train.enable_profiling, steps profile_start_step <= step < profile_end_step,
// 1-based): each rank writes profile_trace_dir/rank_<r>.json, and the coordinator merges the
// ranks' files into profile_trace_dir/trace_merged.json. Open either in Perfetto (ui.perfetto.dev)
// or chrome://tracing. One process per rank (pid = rank), one thread per actor:
//   compute     step N, unit U forward / backward (each unit's compute between its hooks)
//   data        waiting for the dataloader actor's next step
//   comm        each collective: kind, group, bytes
//   checkpoint  staging a save
// Timestamps are wall-clock microseconds (performance.timeOrigin + now), so ranks on one host
// line up in the merged file.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const LANES = { compute: 1, data: 2, comm: 3, checkpoint: 4 } as const;
export type Lane = keyof typeof LANES;

/** Chrome trace event ("X": a complete span; "M": metadata naming a process or thread). */
export interface TraceEvent {
  name: string;
  ph: "X" | "M";
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  cat?: string;
  args?: Record<string, unknown>;
}

const wallUs = (perfMs: number) => Math.round((performance.timeOrigin + perfMs) * 1000);

export class Tracer {
  private events: TraceEvent[] = [];
  /** recording now (inside the profiled steps). */
  on = false;

  constructor(readonly rank: number, readonly dir: string, readonly firstStep: number, readonly endStep: number) {
    this.events.push({ name: "process_name", ph: "M", pid: rank, tid: 0, args: { name: `rank ${rank}` } });
    this.events.push({ name: "process_sort_index", ph: "M", pid: rank, tid: 0, args: { sort_index: rank } });
    for (const [lane, tid] of Object.entries(LANES)) this.events.push({ name: "thread_name", ph: "M", pid: rank, tid, args: { name: lane } });
  }

  /** Is 0-based step `s` (the (s+1)-th step) inside the profiled window? */
  covers(s: number): boolean {
    return s + 1 >= this.firstStep && s + 1 < this.endStep;
  }

  /** A finished span from t0 to t1 (performance.now() ms). */
  span(lane: Lane, name: string, t0: number, t1: number, args?: Record<string, unknown>): void {
    if (!this.on) return;
    this.events.push({ name, ph: "X", cat: lane, pid: this.rank, tid: LANES[lane], ts: wallUs(t0), dur: Math.max(0, Math.round((t1 - t0) * 1000)), ...(args ? { args } : {}) });
  }

  /** Starts a span; the returned function ends it. */
  begin(lane: Lane, name: string, args?: Record<string, unknown>): () => void {
    const t0 = performance.now();
    return () => this.span(lane, name, t0, performance.now(), args);
  }

  get spans(): number {
    return this.events.filter((e) => e.ph === "X").length;
  }

  /** Writes dir/rank_<r>.json (atomically); returns its path. */
  write(): string {
    mkdirSync(this.dir, { recursive: true });
    const path = join(this.dir, `rank_${this.rank}.json`);
    writeAtomic(path, JSON.stringify({ traceEvents: this.events, displayTimeUnit: "ms" }));
    return path;
  }
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Merges dir/rank_*.json into dir/trace_merged.json; returns its path and the ranks found. */
export function mergeTraces(dir: string): { path: string; ranks: number[] } | null {
  if (!existsSync(dir)) return null;
  const files = readdirSync(dir).filter((f) => /^rank_\d+\.json$/.test(f)).sort((a, b) => Number(a.match(/\d+/)![0]) - Number(b.match(/\d+/)![0]));
  if (files.length === 0) return null;
  const events: TraceEvent[] = [];
  const ranks: number[] = [];
  for (const f of files) {
    const t = JSON.parse(readFileSync(join(dir, f), "utf8")) as { traceEvents: TraceEvent[] };
    events.push(...t.traceEvents);
    ranks.push(Number(f.match(/\d+/)![0]));
  }
  const path = join(dir, "trace_merged.json");
  writeAtomic(path, JSON.stringify({ traceEvents: events, displayTimeUnit: "ms" }));
  return { path, ranks };
}
