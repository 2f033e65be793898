// Loader: packing invariants, budget, sharding (every sample exactly once per epoch on 1, 2, 3
// ranks), jsonl + parquet (snappy, zstd) + txt sources, worker thread equals in-process loader.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { createDataLoader, DataLoaderWorker, IGNORE_INDEX, loadTokenizer, type DataLoader, type StepBatch } from "../../data/index.ts";
import { budgetAt, firstFit, packMicroBatch } from "../../data/packing.ts";
import { cfg, sampleIds, writeIdJsonl, writeParquet } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

const opts = (r: number, d: number) => ({ dpRank: r, dpSize: d, vocabSize: 1 << 20, tokenizerPath: null });

/** Runs all ranks in lockstep until one has no step; returns every rank's steps. */
async function runAll(loaders: DataLoader[]): Promise<StepBatch[][]> {
  const out: StepBatch[][] = loaders.map(() => []);
  for (;;) {
    const b = await Promise.all(loaders.map((l) => l.nextStep()));
    if (b.some((x) => x === null)) return out;
    b.forEach((x, r) => out[r].push(x!));
  }
}

function checkMicroBatch(mb: StepBatch["microBatches"][number], budget: number) {
  const T = mb.inputIds.length;
  expect(mb.cuSeqlens[0]).toBe(0);
  expect(mb.cuSeqlens[mb.cuSeqlens.length - 1]).toBe(T);
  let valid = 0;
  for (let s = 0; s + 1 < mb.cuSeqlens.length; s++) {
    const a = mb.cuSeqlens[s], b = mb.cuSeqlens[s + 1];
    for (let t = a; t < b; t++) {
      expect(mb.positionIds[t]).toBe(t - a); // restart per sample: attention by position ids never crosses
      expect(mb.inputIds[t]).toBe(mb.inputIds[a]); // one sample's tokens only between boundaries
    }
    if (s > 0) expect(mb.labels[a]).toBe(IGNORE_INDEX);
  }
  for (let t = 1; t < T; t++) if (mb.labels[t] !== IGNORE_INDEX) valid++;
  expect(mb.validTokens).toBe(valid);
  if (mb.cuSeqlens.length > 2) expect(T).toBeLessThanOrEqual(budget); // only a lone sample may exceed
}

describe("packing", () => {
  test("packMicroBatch concatenates, restarts positions, masks first label of later samples", () => {
    const s = (ids: number[], labels = ids) => ({ ids: Int32Array.from(ids), labels: Int32Array.from(labels) });
    const mb = packMicroBatch([s([5, 6, 7]), s([8, 9], [IGNORE_INDEX, 9]), s([3, 4])]);
    expect(Array.from(mb.inputIds)).toEqual([5, 6, 7, 8, 9, 3, 4]);
    expect(Array.from(mb.labels)).toEqual([5, 6, 7, IGNORE_INDEX, 9, IGNORE_INDEX, 4]);
    expect(Array.from(mb.positionIds)).toEqual([0, 1, 2, 0, 1, 0, 1]);
    expect(Array.from(mb.cuSeqlens)).toEqual([0, 3, 5, 7]);
    expect(mb.validTokens).toBe(4);
  });

  test("firstFit: greedy in insertion order, stops when full, lone over-long sample", () => {
    expect(firstFit([5, 4, 3, 2, 1], 8)).toEqual([0, 2]);
    expect(firstFit([5, 4, 3, 2, 1], 6)).toEqual([0, 4]);
    expect(firstFit([9, 2], 8)).toEqual([1]);
    expect(firstFit([9], 8)).toEqual([0]);
    expect(budgetAt(0, 1000, 0.5, 200, 10)).toBe(200);
    expect(budgetAt(4, 1000, 0.5, 200, 10)).toBe(840);
    expect(budgetAt(5, 1000, 0.5, 200, 10)).toBe(1000);
  });
});

describe("loader", () => {
  for (const dyn of [true, false]) {
    test(`every sample exactly once per epoch on 1, 2, 3 ranks (dyn_bsz ${dyn}), budget kept`, async () => {
      const dir = tempDir("shard");
      const N = 101;
      writeIdJsonl(join(dir, "a.jsonl"), 60, 16);
      writeIdJsonl(join(dir, "b.jsonl"), 41, 16, 60);
      let firstOrder: number[] | null = null;
      for (const D of [1, 2, 3]) {
        const c = cfg(`${dir}/a.jsonl,${dir}/b.jsonl`, { dyn, epochs: 2, mbs: 2, gbs: 2 * D * 2, buffer: 5 });
        const loaders = Array.from({ length: D }, (_, r) => createDataLoader(c, opts(r, D)));
        const steps = await runAll(loaders);
        const count = new Map<number, number>();
        for (const rank of steps) for (const st of rank) {
          expect(st.microBatches.length).toBe(2);
          for (const mb of st.microBatches) { checkMicroBatch(mb, 32); for (const id of sampleIds(mb)) count.set(id, (count.get(id) ?? 0) + 1); }
        }
        // epoch 0 complete and epoch 1 partial: every id once or twice, each exactly once in epoch 0
        expect(count.size).toBe(N);
        for (const v of count.values()) expect(v === 1 || v === 2).toBe(true);
        const rank0 = steps[0].flatMap((s) => s.microBatches.flatMap(sampleIds));
        if (D === 1) firstOrder = rank0;
        expect(rank0.slice(0, 10)).not.toEqual(Array.from({ length: 10 }, (_, i) => i)); // shuffled
        // one epoch: nothing twice, only the end-of-data remainder (less than one step) missing
        const one = await runAll(Array.from({ length: D }, (_, r) => createDataLoader({ ...c, train: { ...c.train, num_train_epochs: 1 } }, opts(r, D))));
        const seen = one.flatMap((rk) => rk.flatMap((st) => st.microBatches.flatMap(sampleIds)));
        expect(new Set(seen).size).toBe(seen.length);
        expect(N - seen.length).toBeLessThan(dyn ? 2 * D * 2 * 2 + 5 * D : 4 * D);
        if (D === 1 && !dyn) expect(rank0.length).toBe(Math.floor((2 * N) / 4) * 4); // drop_last only at the very end
      }
      expect(firstOrder).not.toBeNull();
    }, 30_000);
  }

  test("drop_last false: every sample exactly once per epoch on 1, 2, 3 ranks; the last step pads with no-loss tokens", async () => {
    const dir = tempDir("keep");
    const N = 101;
    writeIdJsonl(join(dir, "a.jsonl"), N, 16);
    for (const D of [1, 2, 3]) {
      for (const epochs of [1, 2]) {
        const base = cfg(`${dir}/a.jsonl`, { dyn: false, epochs, mbs: 2, gbs: 2 * D * 2 });
        const c = { ...base, data: { ...base.data, drop_last: false } };
        const steps = await runAll(Array.from({ length: D }, (_, r) => createDataLoader(c, opts(r, D))));
        // every rank runs the same steps, each with grad-accum micro-batches (SPMD collectives line up)
        const S = steps[0].length;
        expect(S).toBe(Math.ceil((Math.ceil(N / D) * epochs) / 4));
        for (const rk of steps) {
          expect(rk.length).toBe(S);
          for (const st of rk) expect(st.microBatches.length).toBe(2);
        }
        const count = new Map<number, number>();
        let pads = 0;
        for (const rk of steps) for (const st of rk) for (const mb of st.microBatches) {
          if (mb.validTokens === 0 && mb.inputIds.length === 1 && mb.labels[0] === IGNORE_INDEX) { pads++; continue; }
          for (const id of sampleIds(mb)) count.set(id, (count.get(id) ?? 0) + 1);
        }
        expect(count.size).toBe(N);
        for (const v of count.values()) expect(v).toBe(epochs);
        // without it the remainder is dropped
        const dropped = await runAll(Array.from({ length: D }, (_, r) => createDataLoader(base, opts(r, D))));
        const seen = dropped.flatMap((rk) => rk.flatMap((st) => st.microBatches.flatMap(sampleIds)));
        if ((N * epochs) % (4 * D) !== 0) expect(seen.length).toBeLessThan(N * epochs);
        expect(pads).toBeLessThan(2 * D);
      }
    }
  }, 30_000);

  /** Every rank's steps for drop_last false; checks SPMD shape and returns per-sample counts. */
  async function keepLastRun(loaders: DataLoader[], gradAccum: number, budget: number) {
    const steps = await runAll(loaders);
    const S = steps[0].length;
    for (const l of loaders) expect(l.info.trainSteps).toBe(S); // the plan is the run, on every rank
    const count = new Map<number, number>();
    const padsPerRank = steps.map(() => 0);
    steps.forEach((rk, r) => {
      expect(rk.length).toBe(S);
      for (const st of rk) {
        expect(st.microBatches.length).toBe(gradAccum);
        for (const mb of st.microBatches) {
          if (mb.padding) {
            expect([mb.inputIds.length, mb.validTokens, mb.labels[0]]).toEqual([1, 0, IGNORE_INDEX]);
            padsPerRank[r]++;
            continue;
          }
          checkMicroBatch(mb, budget);
          for (const id of sampleIds(mb)) count.set(id, (count.get(id) ?? 0) + 1);
        }
      }
    });
    // a rank's padding comes only after its last sample, and some rank has none in the last step
    // (S is no longer than the longest rank needs)
    for (const rk of steps) {
      const flags = rk.flatMap((st) => st.microBatches.map((m) => m.padding === true));
      expect(flags.slice(flags.indexOf(true) < 0 ? flags.length : flags.indexOf(true)).every(Boolean)).toBe(true);
    }
    expect(steps.some((rk) => !rk[S - 1].microBatches[0].padding)).toBe(true);
    return { S, count, padsPerRank };
  }

  test("drop_last false with dyn_bsz: every sample exactly once per epoch on 1, 2, 3 ranks; ranks agree on the planned steps", async () => {
    const dir = tempDir("keepdyn");
    const N = 101;
    writeIdJsonl(join(dir, "a.jsonl"), 60, 16);
    writeIdJsonl(join(dir, "b.jsonl"), 41, 16, 60);
    const path = `${dir}/a.jsonl,${dir}/b.jsonl`;
    let padded = 0;
    for (const D of [1, 2, 3]) {
      for (const [epochs, gradAccum, warmup] of [[1, 1, 0], [1, 2, 0], [2, 2, 0], [1, 2, 0.5]]) {
        const b0 = cfg(path, { dyn: true, epochs, mbs: 2, gbs: 2 * D * gradAccum, buffer: 5, warmup, warmInit: 10 });
        const base = { ...b0, data: { ...b0.data, train_size: 400 } }; // bsz warmup over floor(400 / (gbs * 16)) * ratio steps
        const c = { ...base, data: { ...base.data, drop_last: false } };
        const { S, count, padsPerRank } = await keepLastRun(Array.from({ length: D }, (_, r) => createDataLoader(c, opts(r, D))), gradAccum, 32);
        expect(count.size).toBe(N);
        for (const v of count.values()) expect(v).toBe(epochs);
        padded += padsPerRank.reduce((a, b) => a + b, 0);
        // drop_last true (unchanged): the ranks stop at the first rank's end, the rest is dropped
        const dropped = await runAll(Array.from({ length: D }, (_, r) => createDataLoader(base, opts(r, D))));
        expect(dropped[0].length).toBeLessThanOrEqual(S);
        const seen = dropped.flatMap((rk) => rk.flatMap((st) => st.microBatches.flatMap(sampleIds)));
        expect(new Set(seen).size).toBeLessThanOrEqual(N);
        if (D > 1 && epochs === 1) expect(seen.length).toBeLessThan(N);
      }
    }
    expect(padded).toBeGreaterThan(0); // some last step was uneven
    // bad samples skipped in the plan as in training
    writeFileSync(join(dir, "bad.jsonl"), `{"input_ids":[1001,1001]}\n{"oops":1}\n{"input_ids":[2001,2001,2001]}\n`);
    const bad = cfg(`${path},${dir}/bad.jsonl`, { dyn: true, mbs: 2, gbs: 8, buffer: 5, onBad: "skip" });
    const b = { ...bad, data: { ...bad.data, drop_last: false } };
    const r = await keepLastRun([0, 1].map((r) => createDataLoader(b, opts(r, 2))), 2, 32);
    expect(r.count.size).toBe(N + 2);
    const strict = { ...b, data: { ...b.data, on_bad_sample: "error" as const } };
    await expect(createDataLoader(strict, opts(0, 2)).plan()).rejects.toThrow(/bad sample: .*bad\.jsonl.*line 2/);
  }, 60_000);

  test("drop_last false with dyn_bsz: resumed mid-epoch still trains every sample exactly once; another dp size is refused", async () => {
    const dir = tempDir("keepdynres");
    const N = 101;
    writeIdJsonl(join(dir, "a.jsonl"), N, 16);
    for (const D of [2, 3]) {
      const base = cfg(`${dir}/a.jsonl`, { dyn: true, epochs: 2, mbs: 2, gbs: 4 * D, buffer: 5 });
      const c = { ...base, data: { ...base.data, drop_last: false } };
      const first = Array.from({ length: D }, (_, r) => createDataLoader(c, opts(r, D)));
      const count = new Map<number, number>();
      const add = (st: StepBatch) => { for (const mb of st.microBatches) if (!mb.padding) for (const id of sampleIds(mb)) count.set(id, (count.get(id) ?? 0) + 1); };
      for (let s = 0; s < 9; s++) for (const l of first) add((await l.nextStep())!);
      const S = first[0].info.trainSteps;
      const states = first.map((l) => l.state());
      const second = Array.from({ length: D }, (_, r) => createDataLoader(c, opts(r, D)));
      for (const [r, l] of second.entries()) await l.restore(states[r]);
      const rest = await runAll(second);
      for (const rk of rest) expect(rk.length).toBe(S - 9);
      for (const rk of rest) for (const st of rk) add(st);
      expect(count.size).toBe(N);
      for (const v of count.values()) expect(v).toBe(2);
      const c1 = { ...c, train: { ...c.train, global_batch_size: 4 * (D + 1) } };
      await expect(createDataLoader(c1, opts(0, D + 1)).restore(states)).rejects.toThrow(`loader state saved on ${D} data-parallel ranks cannot resume on ${D + 1} with data.drop_last false and train.dyn_bsz`);
    }
  }, 60_000);

  test("same seed -> same order, other seed -> other order; max_steps stops", async () => {
    const dir = tempDir("seed");
    writeIdJsonl(join(dir, "a.jsonl"), 50, 8);
    const ids = async (seed: number) => {
      const l = createDataLoader(cfg(join(dir, "a.jsonl"), { seed, maxSteps: 5 }), opts(0, 1));
      const s = await runAll([l]);
      expect(s[0].length).toBe(5);
      return s[0].flatMap((x) => x.microBatches.flatMap(sampleIds));
    };
    const a = await ids(1), b = await ids(1), c = await ids(2);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  }, 30_000);

  test("parquet snappy + zstd (several row groups), jsonl and txt read the same documents", async () => {
    const dir = tempDir("src");
    const docs = Array.from({ length: 30 }, (_, i) => `Document number ${i}.` + " word".repeat(i % 5));
    writeParquet(join(dir, "s.parquet"), [{ name: "id", data: docs.map((_, i) => i), type: "INT32" }, { name: "text", data: docs.slice(0, 15), type: "STRING" }].map((c) => c.name === "id" ? { ...c, data: c.data.slice(0, 15) } : c), "SNAPPY", 4);
    writeParquet(join(dir, "z.parquet"), [{ name: "text", data: docs.slice(15), type: "STRING" }], "ZSTD", 6);
    writeFileSync(join(dir, "d.jsonl"), docs.map((t) => JSON.stringify({ text: t })).join("\n"));
    writeFileSync(join(dir, "d.txt"), docs.join("\n\n  \n"));
    const all = async (path: string) => {
      const l = createDataLoader(cfg(path, { maxSeqLen: 64, mbs: 1, dyn: false }), { ...opts(0, 1), vocabSize: 151936, tokenizerPath: "qwen3" });
      const s = await runAll([l]);
      return s[0].map((x) => Array.from(x.microBatches[0].inputIds).join(",")).sort();
    };
    const pq = await all(dir + "/s.parquet," + dir + "/z.parquet");
    expect(pq.length).toBe(30);
    expect(await all(join(dir, "d.jsonl"))).toEqual(pq);
    expect(await all(join(dir, "d.txt"))).toEqual(pq);
  }, 30_000);

  test("worker thread gives the same steps as the in-process loader, and its state resumes exactly", async () => {
    const dir = tempDir("worker");
    writeIdJsonl(join(dir, "a.jsonl"), 80, 16);
    const c = cfg(join(dir, "a.jsonl"), { maxSteps: 12, buffer: 6 });
    const ref = (await runAll([createDataLoader(c, opts(0, 1))]))[0];
    const w = await DataLoaderWorker.start(c, opts(0, 1), { prefetch: 3 });
    try {
      const got: StepBatch[] = [];
      for (let i = 0; i < 6; i++) got.push((await w.nextStep())!);
      const st = await w.state(); // prefetched steps must not leak into the state
      expect(st.step).toBe(6);
      for (let i = 6; i < 12; i++) got.push((await w.nextStep())!);
      expect(await w.nextStep()).toBeNull();
      expect(got.map((s) => s.microBatches.map((m) => Array.from(m.inputIds)))).toEqual(ref.map((s) => s.microBatches.map((m) => Array.from(m.inputIds))));
      await w.restore(st);
      const again = (await w.nextStep())!;
      expect(again.step).toBe(6);
      expect(Array.from(again.microBatches[0].labels)).toEqual(Array.from(ref[6].microBatches[0].labels));
    } finally { await w.close(); }
  }, 30_000);
  test("conversation jsonl through the loader: labels only on assistant tokens of each packed sample", async () => {
    const dir = tempDir("conv");
    const rows = Array.from({ length: 6 }, (_, i) => ({ messages: [
      { role: "user", content: `Question ${i}?` }, { role: "assistant", content: `Answer ${i}.` }] }));
    writeFileSync(join(dir, "c.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n"));
    const c = cfg(join(dir, "c.jsonl"), { dataType: "conversation", chatTemplate: "chatml", maxSeqLen: 64, mbs: 3, buffer: 6 });
    const l = createDataLoader(c, { ...opts(0, 1), vocabSize: 151936, tokenizerPath: "qwen3" });
    const { loadTokenizer } = await import("../../data/index.ts");
    const tk = loadTokenizer("qwen3");
    const st = (await l.nextStep())!;
    let answers = 0;
    for (const mb of st.microBatches) for (let s = 0; s + 1 < mb.cuSeqlens.length; s++) {
      const a = mb.cuSeqlens[s], b = mb.cuSeqlens[s + 1];
      const ids = Array.from(mb.inputIds.subarray(a, b));
      const trained = ids.filter((_, k) => mb.labels[a + k] !== IGNORE_INDEX);
      // the trained tokens are exactly "Answer k." + <|im_end|> for the k in this sample
      const k = rows.findIndex((_, j) => tk.encode(`<|im_start|>user\nQuestion ${j}?<|im_end|>\n`).every((x, q) => ids[q] === x));
      expect(k).toBeGreaterThanOrEqual(0);
      expect(trained).toEqual([...tk.encode(`Answer ${k}.`), tk.tokenToId("<|im_end|>")!]);
      answers++;
    }
    expect(answers).toBeGreaterThan(0);
  }, 30_000);

  test("bsz warmup: budget ramps from bsz_warmup_init_mbtoken; a sample above it goes alone", async () => {
    const dir = tempDir("warm");
    // samples of 10..16 tokens: under a 6-token warmup budget none fits, each goes alone
    writeFileSync(join(dir, "a.jsonl"), Array.from({ length: 200 }, (_, k) => JSON.stringify({ input_ids: Array(10 + (k % 7)).fill(k + 1) })).join("\n"));
    const c = cfg(join(dir, "a.jsonl"), { mbs: 4, maxSeqLen: 16, warmup: 0.5, warmInit: 6, maxSteps: 20, buffer: 10 });
    const l = createDataLoader(c, opts(0, 1));
    let lone = 0;
    for (let step = 0; step < 20; step++) {
      const budget = budgetAt(step, 64, 0.5, 6, 20);
      const mb = (await l.nextStep())!.microBatches[0];
      if (mb.cuSeqlens.length > 2) expect(mb.inputIds.length).toBeLessThanOrEqual(budget);
      else if (mb.inputIds.length > budget) { expect(step).toBeLessThan(10); lone++; } // only while warming up
    }
    expect(lone).toBeGreaterThan(0);
    expect(budgetAt(0, 64, 0.5, 6, 20)).toBe(6);
  });
  test("steady state: with compute slower than loading, the worker always has the next step ready", async () => {
    const dir = tempDir("stall");
    writeIdJsonl(join(dir, "a.jsonl"), 400, 16);
    const w = await DataLoaderWorker.start(cfg(join(dir, "a.jsonl"), { maxSteps: 12 }), opts(0, 1), { prefetch: 2 });
    try {
      expect(await w.nextStep()).not.toBeNull(); // the first step may be made on demand
      const first = w.stalls;
      for (let i = 1; i < 12; i++) {
        const t0 = performance.now();
        while (performance.now() - t0 < 25); // "compute" on this thread: 25 ms per step
        expect(await w.nextStep()).not.toBeNull();
      }
      expect(w.stalls - first).toBe(0);
    } finally { await w.close(); }
  }, 30_000);
  test("pre-tokenized parquet rows (input_ids + labels list columns) pass through unchanged", async () => {
    const dir = tempDir("pretok");
    const f = join(dir, "p.parquet");
    const { parquetWriteBuffer } = await import("hyparquet-writer");
    writeFileSync(f, new Uint8Array(parquetWriteBuffer({ columnData: [
      { name: "input_ids", data: [[7, 8, 9], [4, 5]] }, { name: "labels", data: [[IGNORE_INDEX, 8, 9], [4, 5]] }] } as any)));
    const l = createDataLoader(cfg(f, { mbs: 2, dyn: false }), { ...opts(0, 1), vocabSize: 10 });
    const mb = (await l.nextStep())!.microBatches[0];
    const bySample = [0, 1].map((s) => [Array.from(mb.inputIds.subarray(mb.cuSeqlens[s], mb.cuSeqlens[s + 1])), Array.from(mb.labels.subarray(mb.cuSeqlens[s], mb.cuSeqlens[s + 1]))]);
    bySample.sort((a, b) => a[0][0] - b[0][0]);
    expect(bySample[0][0]).toEqual([4, 5]);
    expect(bySample[1][0]).toEqual([7, 8, 9]);
    expect(bySample[1][1].slice(1)).toEqual([8, 9]); // own labels kept (the first may be masked as a later sample)
    expect(mb.inputIds.length).toBe(5);
  });

  test("the tokenizer is built on the first text sample: pre-tokenized rows never build it; a wrong path still fails at start", async () => {
    const dir = tempDir("lazytok");
    const ids = join(dir, "ids.jsonl");
    writeIdJsonl(ids, 12, 8);
    const pre = createDataLoader(cfg(ids, { mbs: 2, dyn: false }), { ...opts(0, 1), tokenizerPath: "qwen3" });
    expect((await runAll([pre]))[0].length).toBe(6);
    expect(pre.tokenizerEngine).toBeNull(); // every row was input_ids: no tokenizer.json parsed
    const text = join(dir, "text.jsonl");
    writeFileSync(text, [JSON.stringify({ text: "hello world" }), JSON.stringify({ input_ids: [5, 6] })].join("\n") + "\n");
    const mixed = createDataLoader(cfg(text, { mbs: 2, dyn: false, maxSeqLen: 32 }), { ...opts(0, 1), vocabSize: 151936, tokenizerPath: "qwen3" });
    const mb = (await mixed.nextStep())!.microBatches[0];
    expect(mixed.tokenizerEngine).toBe("fast");
    const tk = loadTokenizer("qwen3");
    const want = [...tk.encode("hello world"), tk.eosId!];
    const got = [0, 1].map((s) => Array.from(mb.inputIds.subarray(mb.cuSeqlens[s], mb.cuSeqlens[s + 1])));
    expect(got).toContainEqual(want); // the text row tokenized as with an eager tokenizer
    expect(got).toContainEqual([5, 6]);
    expect(() => createDataLoader(cfg(ids), { ...opts(0, 1), tokenizerPath: join(dir, "no-such-tokenizer") })).toThrow(/no-such-tokenizer/);
  });
});
