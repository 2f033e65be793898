// checkpoint/safetensors.ts: byte-exact rewrite of a torch-written file, BF16 / F16 encoding
// (round to nearest even, as torch), HF sharded folders (model-0000k-of-0000n + index json).
import { expect, test } from "bun:test";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import {
  SafetensorsFile, SafetensorsFolder, SafetensorsWriter, encodeFromF32, f16ToF32, f32ToF16, writeHfWeights, writeSafetensors,
} from "../../checkpoint/safetensors.ts";
import { FIXTURES } from "./fixtures.ts";
import { tempDir } from "../harness/tmp.ts";

test("rewriting the torch-made F32 file reproduces it byte for byte", () => {
  const src = `${FIXTURES}qwen2-tiny/model.safetensors`;
  const f = new SafetensorsFile(src);
  const dir = tempDir("st");
  try {
    const tensors = [...f.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: f.readF32(t.name) }));
    writeSafetensors(`${dir}/out.safetensors`, tensors, f.metadata);
    expect(Buffer.compare(readFileSync(`${dir}/out.safetensors`), readFileSync(src))).toBe(0);
  } finally {
    f.close();
  }
});

test("BF16 weights of the HF llama decode to f32 and re-encode to the same bytes", () => {
  const f = new SafetensorsFile(`${FIXTURES}tiny-random-llama-2/model.safetensors`);
  for (const t of f.tensors.values()) {
    expect(t.dtype).toBe("BF16");
    expect(Buffer.from(encodeFromF32(f.readF32(t.name), "BF16")).equals(Buffer.from(f.readRaw(t.name)))).toBe(true);
  }
  f.close();
});

test("F16 and BF16 rounding: nearest even, overflow to inf, subnormals", () => {
  expect(f32ToF16(1)).toBe(0x3c00);
  expect(f32ToF16(65504)).toBe(0x7bff);
  expect(f32ToF16(65520)).toBe(0x7c00); // rounds up past max -> inf
  expect(f32ToF16(-2)).toBe(0xc000);
  expect(f32ToF16(2 ** -24)).toBe(0x0001); // smallest subnormal
  expect(f32ToF16(2 ** -26)).toBe(0); // below half of it
  expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
  expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
  expect(Number.isNaN(f16ToF32(f32ToF16(NaN)))).toBe(true);
  for (const x of [0.1, -3.25, 1e-5, 1234.5, 6e-8]) expect(Math.abs(f16ToF32(f32ToF16(x)) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11 + 2 ** -25);
  const bf = new Uint16Array(encodeFromF32(Float32Array.of(1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -0.5), "BF16").buffer);
  expect(Array.from(bf)).toEqual([0x3f80, 0x3f80, 0x3f82, 0xbf00]);
});

test("streamed writer refuses out-of-order and missing tensors, naming them", () => {
  const dir = tempDir("st");
  const w = new SafetensorsWriter(`${dir}/a.safetensors`, [
    { name: "a", dtype: "F16", shape: [2] }, { name: "b", dtype: "F32", shape: [1] },
  ]);
  expect(() => w.write("b", Float32Array.of(1))).toThrow(/tensor "b": written out of order \(expected "a"\)/);
  w.write("a", Float32Array.of(0.5, 2));
  expect(() => w.close()).toThrow(/closed with 1 tensors unwritten: b/);
});

test("HF sharded folder: write in shards with an index, read back by name", () => {
  const dir = tempDir("st");
  const tensors = Array.from({ length: 5 }, (_, i) => ({
    name: `t${i}`, dtype: "BF16" as const, shape: [4, 8], data: Float32Array.from({ length: 32 }, (_, j) => i + j / 4),
  }));
  const files = writeHfWeights(dir, tensors, 2 * 64); // two 64-byte tensors per shard
  expect(files).toEqual(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"]);
  expect(readdirSync(dir).sort()).toEqual([...files].sort());
  const index = JSON.parse(readFileSync(`${dir}/model.safetensors.index.json`, "utf8"));
  expect(index.metadata.total_size).toBe(5 * 64);
  const folder = new SafetensorsFolder(dir);
  expect(folder.names().sort()).toEqual(tensors.map((t) => t.name));
  for (const t of tensors) expect(Array.from(folder.readF32(t.name))).toEqual(Array.from(t.data)); // exact in bf16
  folder.close();
  index.weight_map.t4 = "model-00001-of-00003.safetensors";
  writeFileSync(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
  expect(() => new SafetensorsFolder(dir)).toThrow(/weight_map puts "t4" in model-00001-of-00003.safetensors, which has no such tensor/);
});
