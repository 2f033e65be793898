// train.enable_profiling on 2 FSDP ranks (real processes, real nats-server, real TCP): each rank
// writes a Chrome trace of the profiled steps only, with spans from every actor lane (step and
// per-unit forward/backward, data wait, collectives with their bytes), and the coordinator
// merges them into one file holding both ranks.
import { afterAll, expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { TraceEvent } from "../../actors/trace.ts";
import { childPids, fileLogger } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

afterAll(() => expect(childPids()).toEqual([]));

test("a traced 2-rank run: spans from every rank, merged into one file", async () => {
  const dir = tempDir("trace");
  const out = join(dir, "out");
  const traceDir = join(dir, "trace");
  const config = tinyTrainConfig(dir, out, { world_size: 2 }, {
    data_parallel_mode: "fsdp2", max_steps: 4, enable_profiling: true, profile_start_step: 2, profile_end_step: 4, profile_trace_dir: traceDir,
  });
  expect(await runJob(config, fileLogger(dir).logger)).toBe(0);
  expect(readdirSync(traceDir).sort()).toEqual(["rank_0.json", "rank_1.json", "trace_merged.json"]);
  for (const r of [0, 1]) {
    const ev = (JSON.parse(readFileSync(join(traceDir, `rank_${r}.json`), "utf8")).traceEvents as TraceEvent[]).filter((e) => e.ph === "X");
    expect(new Set(ev.map((e) => e.pid))).toEqual(new Set([r]));
    // steps 2 and 3 (1-based) only
    expect(ev.filter((e) => e.name.startsWith("step ")).map((e) => e.name)).toEqual(["step 2", "step 3"]);
    expect(new Set(ev.map((e) => e.cat))).toEqual(new Set(["compute", "data", "comm"]));
    const fwd = ev.filter((e) => / forward$/.test(e.name));
    const bwd = ev.filter((e) => / backward$/.test(e.name));
    expect(fwd.length).toBeGreaterThan(0);
    expect(bwd.length).toBe(fwd.length);
    // FSDP: parameter all-gathers and gradient reduce-scatters, each with its bytes
    const comm = ev.filter((e) => e.cat === "comm");
    expect(new Set(comm.map((e) => e.name))).toContain("all_gather");
    expect(new Set(comm.map((e) => e.name))).toContain("reduce_scatter");
    for (const c of comm) expect((c.args as { bytes: number }).bytes).toBeGreaterThanOrEqual(0);
    expect(comm.some((c) => (c.args as { bytes: number }).bytes > 0)).toBe(true);
    for (const e of ev) expect(e.dur).toBeGreaterThanOrEqual(0);
  }
  const merged = JSON.parse(readFileSync(join(traceDir, "trace_merged.json"), "utf8")).traceEvents as TraceEvent[];
  expect(new Set(merged.filter((e) => e.ph === "X").map((e) => e.pid))).toEqual(new Set([0, 1]));
  expect(merged.filter((e) => e.name === "process_name").map((e) => (e.args as { name: string }).name)).toEqual(["rank 0", "rank 1"]);
}, 120_000);
