// Merge of 2, 3 and 4 uneven ranks into a Hugging Face folder equals the in-memory model.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mergeToHf, parseDType, parseSize, writeModelAssets } from "../../checkpoint/index.ts";
import { HF_INDEX, SafetensorsFolder, f32ToBf16 } from "../../checkpoint/safetensors.ts";
import { firstDiff, fillModel, fsdpPieces, saveAll, smallModel } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const units = smallModel();
const full = fillModel(units, 3);
const params = [...full].filter(([n]) => !n.startsWith("optim."));
const tmp = tempDir("merge");
const ROOT = join(import.meta.dir, "..", "..");

// A model folder with config + tokenizer files, as model_path would be.
const modelDir = join(tmp, "model");
mkdirSync(modelDir);
writeFileSync(join(modelDir, "config.json"), JSON.stringify({ model_type: "llama", torch_dtype: "float32", vocab_size: 37 }));
writeFileSync(join(modelDir, "tokenizer.json"), '{"version":"1.0"}');
writeFileSync(join(modelDir, "model.safetensors"), "weights are not assets");

describe("merge to Hugging Face", () => {
  test("model_assets: config + tokenizer copied, weights not", () => {
    const names = writeModelAssets(join(tmp, "out"), { dirs: [modelDir] });
    expect(names).toEqual(["config.json", "tokenizer.json"]);
    expect(readdirSync(join(tmp, "out")).sort()).toEqual(["model_assets"]);
  });

  for (const world of [2, 3, 4]) {
    test(`${world} ranks -> one f32 file, bitwise equal`, async () => {
      const dir = join(tmp, `w${world}`, "global_step_9");
      await saveAll(dir, 9, [...Array(world).keys()].map((r) => fsdpPieces(units, world, r, full)));
      const save = join(dir, "hf_ckpt");
      const files = mergeToHf({ loadDir: dir, modelAssetsDir: join(tmp, "out", "model_assets"), saveDir: save, shardBytes: parseSize("2GB"), dtype: "F32" });
      expect(files).toEqual(["config.json", "model.safetensors", "tokenizer.json"]);
      expect(readdirSync(dir).some((n) => n.includes(".tmp-"))).toBe(false);
      const hf = new SafetensorsFolder(save);
      expect(hf.names().sort()).toEqual(params.map(([n]) => n).sort()); // no optimizer state
      for (const [name, a] of params) expect({ name, diff: firstDiff(hf.readF32(name), a) }).toEqual({ name, diff: -1 });
      hf.close();
      expect(JSON.parse(readFileSync(join(save, "config.json"), "utf8")).torch_dtype).toBe("float32");
    });
  }

  test("bf16 in shards of at most --shard-size, with index; re-merge replaces the folder", async () => {
    const dir = join(tmp, "w3", "global_step_9");
    const save = join(tmp, "hf_bf16");
    for (let round = 0; round < 2; round++) {
      mergeToHf({ loadDir: dir, modelAssetsDir: join(tmp, "out", "model_assets"), saveDir: save, shardBytes: 1000, dtype: parseDType("bf16") });
    }
    const index = JSON.parse(readFileSync(join(save, HF_INDEX), "utf8"));
    const shardFiles = [...new Set(Object.values(index.weight_map) as string[])].sort();
    expect(shardFiles.length).toBeGreaterThan(3);
    expect(shardFiles[0]).toBe(`model-00001-of-${String(shardFiles.length).padStart(5, "0")}.safetensors`);
    expect(readdirSync(tmp).filter((n) => n.startsWith("hf_bf16"))).toEqual(["hf_bf16"]);
    const hf = new SafetensorsFolder(save);
    for (const [name, a] of params) {
      expect(hf.info(name)!.dtype).toBe("BF16");
      const got = hf.readF32(name);
      let bad = -1;
      const want = new Float32Array(new Uint32Array(Array.from(a, (x) => f32ToBf16(x) << 16)).buffer); // round to nearest even
      for (let i = 0; i < a.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
      expect({ name, bad }).toEqual({ name, bad: -1 });
    }
    hf.close();
    expect(JSON.parse(readFileSync(join(save, "config.json"), "utf8")).torch_dtype).toBe("bfloat16");
  });

  test("CLI: bun run merge, and its errors", () => {
    const bun = process.execPath;
    const save = join(tmp, "cli_out");
    const ok = Bun.spawnSync([bun, "tools/merge.ts", "--load-dir", join(tmp, "w2", "global_step_9"), "--model_assets_dir", join(tmp, "out", "model_assets"), "--save-dir", save, "--shard-size=2GB", "--dtype", "f32"], { cwd: ROOT });
    expect(ok.stderr.toString()).toBe("");
    expect(ok.exitCode).toBe(0);
    expect(existsSync(join(save, "model.safetensors"))).toBe(true);
    const bad = Bun.spawnSync([bun, "tools/merge.ts", "--load-dir", join(tmp, "nope"), "--save-dir", save], { cwd: ROOT });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr.toString()).toContain("no metadata.json: not a committed checkpoint");
    expect(existsSync(join(save, "model.safetensors"))).toBe(true); // the earlier export is untouched
    expect(() => parseSize("2 potatoes")).toThrow(/--shard-size "2 potatoes"/);
    expect(parseSize("2GB")).toBe(2e9);
    expect(parseSize("5GiB")).toBe(5 * 2 ** 30);
  });
});
