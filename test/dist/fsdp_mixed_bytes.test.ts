// FSDP under mixed precision all-gathers bf16 parameters: the bytes each rank's transport moves
// for all-gathers are exactly half the f32 run's, while gradient reduce-scatters stay f32 (same
// bytes). Real processes and TCP; bytes as the transport reports each collective (Comm.onOp, in
// the rank's Chrome trace), 2 ranks, ZeRO-3 and ZeRO-2.
import { afterAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { runJob } from "../../actors/coordinator.ts";
import type { TraceEvent } from "../../actors/trace.ts";
import { childPids, fileLogger } from "./actors_harness.ts";
import { tempDir } from "../harness/tmp.ts";
import { tinyTrainConfig } from "./actors_parity_setup.ts";

afterAll(() => expect(childPids()).toEqual([]));

/** Bytes per collective kind on each rank over the profiled steps. */
async function commBytes(train: object): Promise<Record<string, number>[]> {
  const dir = tempDir("fsdp-bytes");
  const traceDir = join(dir, "trace");
  const config = tinyTrainConfig(dir, join(dir, "out"), { world_size: 2 }, {
    data_parallel_mode: "fsdp2", max_steps: 2, enable_profiling: true, profile_start_step: 1, profile_end_step: 3, profile_trace_dir: traceDir, ...train,
  });
  expect(await runJob(config, fileLogger(dir).logger)).toBe(0);
  return [0, 1].map((r) => {
    const ev = (JSON.parse(readFileSync(join(traceDir, `rank_${r}.json`), "utf8")).traceEvents as TraceEvent[]).filter((e) => e.ph === "X" && e.cat === "comm");
    const by: Record<string, number> = {};
    for (const e of ev) by[e.name] = (by[e.name] ?? 0) + (e.args as { bytes: number }).bytes;
    return by;
  });
}

for (const [name, train] of [["ZeRO-3", {}], ["ZeRO-2 (enable_full_shard false)", { enable_full_shard: false }]] as const) {
  test(`${name}: mixed precision all-gathers half the bytes of f32; reduce-scatters the same f32 bytes`, async () => {
    const f32 = await commBytes({ ...train, enable_mixed_precision: false });
    const mixed = await commBytes({ ...train, enable_mixed_precision: true });
    for (const r of [0, 1]) {
      expect(f32[r].all_gather).toBeGreaterThan(0);
      expect(mixed[r].all_gather * 2).toBe(f32[r].all_gather);
      expect(mixed[r].reduce_scatter).toBe(f32[r].reduce_scatter);
    }
  }, 120_000);
}
