// Sharded loading (models/weights.ts): each rank's FSDP shard of every unit, filled from ranged
// safetensors reads or from the seeded init, equals the same slice of the whole model loaded
// the ordinary way, bit for bit, for 1, 2, 3 and 4 ranks (uneven splits, odd offsets, padding);
// a meta model materialized equals the full one; a rank reads only its share of the bytes.
import { expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { createKernels } from "../../kernels/index.ts";
import { SafetensorsFile, writeHfWeights } from "../../checkpoint/safetensors.ts";
import {
  createModel, exportTensors, fillUnitRange, initSource, initWeights, loadPretrained, materialize, modelWithSource, safetensorsSource,
  type DecoderLM, type WeightSource,
} from "../../models/index.ts";
import { FIXTURES } from "./fixtures.ts";
import { tempDir } from "../harness/tmp.ts";

const k = await createKernels({ backend: "cpu", threads: 1 });
const OPTS = { maxTokens: 8, gradientCheckpointing: false };

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Every rank's shard of every unit (FSDP's split: n = ceil(N / S), rank i holds [i n, (i+1) n)) vs the full model. */
function expectShardsEqual(full: DecoderLM, src: WeightSource, S: number): void {
  for (const u of full.layout.units) {
    const n = Math.ceil(u.numel / S);
    const whole = full.params[u.index].host!;
    for (let i = 0; i < S; i++) {
      const shard = new Float32Array(n).fill(NaN);
      fillUnitRange(u, i * n, shard, src);
      const want = new Float32Array(n); // padding past the unit's end is zero
      want.set(whole.subarray(Math.min(i * n, u.numel), Math.min((i + 1) * n, u.numel)));
      if (!bits(shard).equals(bits(want))) throw new Error(`unit ${u.name}, rank ${i} of ${S}: shard differs from the full load`);
    }
  }
}

/** A HF folder of `model`'s weights in `dtype`, split in shards of at most `maxBytes` (index json). */
async function saveFolder(model: DecoderLM, dtype: "F32" | "BF16" | "F16", maxBytes: number, config: string): Promise<string> {
  const dir = tempDir("shard");
  writeFileSync(`${dir}/config.json`, config);
  const files = writeHfWeights(dir, await exportTensors(model, dtype), maxBytes);
  expect(files.length).toBeGreaterThan(2); // several shards + the index
  return dir;
}

test("safetensors shards (F32, BF16, F16; index json) for 1-4 ranks equal the full load bit for bit", async () => {
  const cfg = readFileSync(`${FIXTURES}qwen2-tiny/config.json`, "utf8");
  const base = loadPretrained(k, `${FIXTURES}qwen2-tiny`, OPTS);
  for (const dtype of ["F32", "BF16", "F16"] as const) {
    const dir = await saveFolder(base, dtype, 20_000, cfg);
    const full = loadPretrained(k, dir, OPTS);
    const src = safetensorsSource(dir, full.layout, full.config.tied, full.config.modelType);
    for (const S of [1, 2, 3, 4]) expectShardsEqual(full, src, S);
    src.close();
  }
  // the BF16 fixture of HF's tiny llama, as shipped (untied lm_head)
  const llama = loadPretrained(k, `${FIXTURES}tiny-random-llama-2`, OPTS);
  const src = safetensorsSource(`${FIXTURES}tiny-random-llama-2`, llama.layout, llama.config.tied, llama.config.modelType);
  for (const S of [1, 2, 3, 4]) expectShardsEqual(llama, src, S);
  src.close();
});

test("random init shards (per-parameter streams, skip-ahead to odd offsets) for 1-4 ranks equal the full init", () => {
  const raw = JSON.parse(readFileSync(`${FIXTURES}qwen2-tiny/config.json`, "utf8"));
  for (const tied of [true, false]) {
    const full = createModel(k, { ...raw, tie_word_embeddings: tied, vocab_size: 97 }, "test", OPTS); // 97: odd unit sizes
    initWeights(full, 1234);
    const src = initSource(1234, full.config.initializerRange);
    for (const S of [1, 2, 3, 4]) expectShardsEqual(full, src, S);
    // any range of a parameter, not just shard boundaries
    const p = full.layout.byName.get("model.embed_tokens.weight")!;
    for (const [from, len] of [[0, 1], [1, 1], [1, 2], [5, 7], [p.numel - 3, 3]]) {
      const got = new Float32Array(len);
      src.read(p, from, got);
      expect(bits(got).equals(bits(full.params[0].host!.subarray(p.offset + from, p.offset + from + len)))).toBe(true);
    }
  }
});

test("a meta model materialized from its source equals the full build; before that it names what is missing", () => {
  const dir = `${FIXTURES}qwen2-tiny`;
  const { model, source } = modelWithSource(k, { model_path: dir, config_path: null }, 0, { ...OPTS, meta: true });
  expect(model.params.length).toBe(0);
  expect(() => model.param("model.norm.weight")).toThrow(`model qwen2: "model.norm.weight" has no buffer (a meta model: a plan or materialize() provides it)`);
  materialize(model, source);
  source.close();
  const full = loadPretrained(k, dir, OPTS);
  for (const u of full.layout.units) expect(bits(model.params[u.index].host!).equals(bits(full.params[u.index].host!))).toBe(true);

  const init = modelWithSource(k, { model_path: null, config_path: `${dir}/config.json` }, 42, { ...OPTS, meta: true });
  materialize(init.model, init.source);
  const ref = createModel(k, JSON.parse(readFileSync(`${dir}/config.json`, "utf8")), "test", OPTS);
  initWeights(ref, 42);
  for (const u of ref.layout.units) expect(bits(init.model.params[u.index].host!).equals(bits(ref.params[u.index].host!))).toBe(true);
});

/** Bytes this process has read through read()/pread() so far (Linux /proc/self/io rchar). */
function rchar(): number {
  return Number(/rchar: (\d+)/.exec(readFileSync("/proc/self/io", "utf8"))![1]);
}

test("a rank reads only its share of the checkpoint's bytes", async () => {
  const raw = { ...JSON.parse(readFileSync(`${FIXTURES}qwen2-tiny/config.json`, "utf8")), vocab_size: 4000, hidden_size: 64, intermediate_size: 160 };
  const model = createModel(k, raw, "test", OPTS);
  initWeights(model, 3);
  const dir = await saveFolder(model, "BF16", 200_000, JSON.stringify(raw));
  const dataBytes = 2 * model.layout.totalNumel;
  const src = safetensorsSource(dir, model.layout, model.config.tied, model.config.modelType);
  for (const S of [2, 4]) {
    const before = rchar();
    const shards = model.layout.units.map((u) => {
      const n = Math.ceil(u.numel / S);
      const out = new Float32Array(n);
      fillUnitRange(u, 1 * n, out, src); // rank 1
      return out;
    });
    const read = rchar() - before; // (reading /proc/self/io itself adds a few hundred bytes)
    expect(shards.length).toBe(model.layout.units.length);
    expect(read).toBeGreaterThanOrEqual(dataBytes / S - 2 * model.layout.units.length);
    expect(read).toBeLessThan(dataBytes / S + 4096);
  }
  src.close();
});

test("bad ranges and mismatched checkpoints are one-line errors naming the file and tensor", async () => {
  const f = new SafetensorsFile(`${FIXTURES}qwen2-tiny/model.safetensors`);
  expect(() => f.readF32Range("model.norm.weight", 30, new Float32Array(3))).toThrow(
    `safetensors ${FIXTURES}qwen2-tiny/model.safetensors: tensor "model.norm.weight": range [30, 33) is outside its 32 elements`,
  );
  f.close();
  const model = createModel(k, { ...JSON.parse(readFileSync(`${FIXTURES}qwen2-tiny/config.json`, "utf8")), hidden_size: 64 }, "test", OPTS);
  expect(() => safetensorsSource(`${FIXTURES}qwen2-tiny`, model.layout, true, "qwen2")).toThrow("checkpoint does not match config.json (model_type qwen2)");
  const src = initSource(1, 0.02);
  expect(() => src.read(model.layout.byName.get("model.norm.weight")!, 60, new Float32Array(5))).toThrow("init model.norm.weight: range [60, 65) is outside its 64 elements");
});
