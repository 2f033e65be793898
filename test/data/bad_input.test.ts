// Bad input: each case stops with an error naming the file and line/row, or, with
// data.on_bad_sample: skip, is counted and skipped. Empty or too-small datasets fail at start.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { createDataLoader } from "../../data/index.ts";
import { cfg, writeParquet } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

const opts = { dpRank: 0, dpSize: 1, vocabSize: 1000, tokenizerPath: null };
const good = (k: number) => JSON.stringify({ input_ids: [k + 1, k + 1, k + 1] });

/** A jsonl of 12 good rows with `bad` at line 5; returns the error of reading it all, and skips. */
async function run(bad: string, onBad: "error" | "skip", extra: Partial<Parameters<typeof cfg>[1]> = {}) {
  const dir = tempDir("bad");
  const lines = Array.from({ length: 12 }, (_, k) => good(k));
  lines.splice(4, 0, bad);
  const f = join(dir, "d.jsonl");
  writeFileSync(f, lines.join("\n") + "\n");
  const l = createDataLoader(cfg(f, { onBad, mbs: 1, dyn: false, maxSeqLen: 8, ...extra }), opts);
  let steps = 0;
  try { while (await l.nextStep()) steps++; } catch (e) { return { error: (e as Error).message, steps, skipped: l.skipped, f }; }
  return { error: null, steps, skipped: l.skipped, f };
}

describe("bad input", () => {
  const cases: [string, string, RegExp][] = [
    ["invalid JSON", '{"input_ids": [1, 2', /line 5: invalid JSON/],
    ["wrong type in a column", JSON.stringify({ input_ids: ["a", "b"] }), /line 5: column 'input_ids': expected an array of integers/],
    ["labels of the wrong length", JSON.stringify({ input_ids: [1, 2], labels: [1] }), /line 5: column 'labels': expected an array of 2 integers/],
    ["missing column", JSON.stringify({ other: 1 }), /line 5: text sample but no tokenizer|line 5: missing column/],
    ["token id >= vocabulary size", JSON.stringify({ input_ids: [1, 1000] }), /line 5: token id 1000 at position 1 is outside the vocabulary \[0, 1000\)/],
    ["negative token id", JSON.stringify({ input_ids: [-3] }), /line 5: token id -3/],
    ["sample longer than max_seq_len", JSON.stringify({ input_ids: Array(9).fill(1) }), /line 5: sample of 9 tokens is longer than data.max_seq_len 8/],
    ["not an object", "[1,2,3]", /line 5: (text sample but no tokenizer|expected a JSON object)/],
  ];
  for (const [name, bad, re] of cases) {
    test(`${name}: error names file and line; skip counts it`, async () => {
      const e = await run(bad, "error");
      expect(e.error).toMatch(re);
      expect(e.error).toContain(e.f);
      const s = await run(bad, "skip");
      expect(s.error).toBeNull();
      expect(s.skipped).toBe(1);
      expect(s.steps).toBe(12); // every good row still trained once
    });
  }

  test("missing text column and wrong text type with a tokenizer; parquet without the column", async () => {
    const dir = tempDir("col");
    const f = join(dir, "t.jsonl");
    writeFileSync(f, [JSON.stringify({ text: "fine" }), JSON.stringify({ txt: "x" }), JSON.stringify({ text: 5 })].join("\n"));
    const mk = (onBad: "error" | "skip") => createDataLoader(cfg(f, { onBad, mbs: 1, dyn: false, maxSeqLen: 8, seed: 1 }), { ...opts, vocabSize: 151936, tokenizerPath: "qwen3" });
    let msgs: string[] = [];
    for (let seed = 0; seed < 1; seed++) {
      const l = mk("error");
      try { while (await l.nextStep()); } catch (e) { msgs.push((e as Error).message); }
    }
    expect(msgs[0]).toMatch(new RegExp(`${f} line (2: missing column 'text'|3: column 'text': expected a string, got number)`));
    const s = mk("skip");
    let n = 0;
    while (await s.nextStep()) n++;
    expect(n).toBe(1);
    expect(s.skipped).toBe(2);
    const p = join(dir, "p.parquet");
    writeParquet(p, [{ name: "body", data: ["a", "b"], type: "STRING" }], "SNAPPY", 10);
    expect(() => createDataLoader(cfg(p), { ...opts, tokenizerPath: "qwen3" })).toThrow(new RegExp(`${p}: no column named 'text'.*columns: body`));
  }, 30_000);

  test("empty file, empty dataset, too few samples for one step: fail at start with the counts", () => {
    const dir = tempDir("empty");
    const e = join(dir, "e.jsonl"), g = join(dir, "g.jsonl");
    writeFileSync(e, "\n  \n");
    writeFileSync(g, [good(0), good(1), good(2)].join("\n"));
    expect(() => createDataLoader(cfg(e), opts)).toThrow(`${e}: empty file`);
    expect(() => createDataLoader(cfg(e, { onBad: "skip" }), opts)).toThrow(/empty dataset: 0 samples in 1 file/);
    expect(() => createDataLoader(cfg(`${e},${g}`, { onBad: "skip", mbs: 2, gbs: 4, dyn: false }), opts))
      .toThrow(/too few samples for one step: 3 samples in data.train_path, one step needs 4/);
    expect(() => createDataLoader(cfg(g, { mbs: 2, gbs: 6 }), { ...opts, dpSize: 2 })).toThrow(/global_batch_size 6 is not a multiple of micro_batch_size 2 x data-parallel size 2/);
    expect(() => createDataLoader(cfg(join(dir, "nope")), opts)).toThrow(/does not exist/);
  });
});
