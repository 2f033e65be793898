// Merge a sharded checkpoint into a Hugging Face model folder: the model tensors (optimizer
// state left out) as safetensors in the chosen dtype, one `model.safetensors` or
// `model-0000k-of-0000n.safetensors` shards of at most `shardBytes` + index, plus the model
// assets (config with torch_dtype updated, tokenizer). Written under `<save_dir>.tmp-<pid>`,
// every file fsynced, then renamed into place: a half-written export never has the final name.

import { copyFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fsyncFile, listFiles, replaceDir, writeDurable } from "./assets.ts";
import { numelOf } from "./format.ts";
import { loadShard, openCheckpoint, verifyFiles } from "./load.ts";
import { DTYPE_BYTES, HF_INDEX, SafetensorsWriter, shardName } from "./safetensors.ts";
import { fsyncDir } from "./rank_writer.ts";

export type ExportDType = "F32" | "BF16" | "F16";
const TORCH_DTYPE: Record<ExportDType, string> = { F32: "float32", BF16: "bfloat16", F16: "float16" };

export interface MergeOptions {
  loadDir: string;
  /** output_dir/model_assets (config.json required); null: weights only. */
  modelAssetsDir: string | null;
  saveDir: string;
  shardBytes: number;
  dtype: ExportDType;
  /** Check the whole-file CRC of every file read (default true; `--no-verify` for speed). */
  verify?: boolean;
}

/** "2GB" -> 2e9, "500MB", "5GiB", "1048576": bytes (HF's convention: GB = 1e9). */
export function parseSize(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$/i.exec(s);
  if (!m) throw new Error(`--shard-size ${JSON.stringify(s)}: expected a size like 2GB, 500MB, 5GiB or a byte count`);
  const unit = (m[2] ?? "B").toLowerCase();
  const mult: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };
  const n = Math.floor(Number(m[1]) * mult[unit]);
  if (n <= 0) throw new Error(`--shard-size ${s}: must be positive`);
  return n;
}

export function parseDType(s: string): ExportDType {
  const d = s.toUpperCase().replace("FLOAT32", "F32").replace("BFLOAT16", "BF16").replace("FLOAT16", "F16").replace("FP32", "F32").replace("FP16", "F16");
  if (d !== "F32" && d !== "BF16" && d !== "F16") throw new Error(`--dtype ${s}: expected bf16, f16 or f32`);
  return d;
}

/** Runs the merge; returns the files of the new folder. */
export function mergeToHf(o: MergeOptions): string[] {
  const meta = openCheckpoint(o.loadDir);
  const names = Object.keys(meta.tensors).filter((n) => meta.tensors[n].group === "model");
  if (!names.length) throw new Error(`${o.loadDir}: the checkpoint has no model tensors`);
  // every file holding model pieces, checked once (the per-tensor loads below then skip it)
  if (o.verify !== false) verifyFiles(o.loadDir, meta, new Set(names.flatMap((n) => meta.tensors[n].pieces.map((p) => p.file))));
  // Shards: greedy in checkpoint order, tensors never split (as HF's save_pretrained).
  const shards: string[][] = [[]];
  let cur = 0, total = 0;
  for (const n of names) {
    const b = numelOf(meta.tensors[n].shape) * DTYPE_BYTES[o.dtype];
    if (cur > 0 && cur + b > o.shardBytes) { shards.push([]); cur = 0; }
    shards.at(-1)!.push(n);
    cur += b;
    total += b;
  }
  const tmp = `${o.saveDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const files = shards.length === 1 ? ["model.safetensors"] : shards.map((_, k) => shardName(k + 1, shards.length));
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, k) => {
      const w = new SafetensorsWriter(join(tmp, files[k]), shard.map((name) => ({ name, dtype: o.dtype, shape: meta.tensors[name].shape })), { format: "pt" });
      for (const name of shard) {
        // One whole tensor at a time, assembled from its pieces (CRC-checked), so memory stays ~1 tensor.
        const t = meta.tensors[name];
        const target = { name, group: t.group, shape: t.shape, start: 0, data: new Float32Array(numelOf(t.shape)) };
        loadShard(o.loadDir, { expected: new Map([[name, t.shape]]), targets: [target], verify: false }, { ...meta, tensors: { [name]: t } });
        w.write(name, target.data);
        weightMap[name] = files[k];
      }
      w.close({ fsync: true });
    });
    if (shards.length > 1) writeDurable(join(tmp, HF_INDEX), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n");
    if (o.modelAssetsDir) {
      const assets = listFiles(o.modelAssetsDir);
      if (!assets.includes("config.json")) throw new Error(`--model_assets_dir ${o.modelAssetsDir}: no config.json (found: ${assets.join(", ") || "nothing"})`);
      for (const f of assets) {
        if (f === "config.json") {
          const cfg = JSON.parse(readFileSync(join(o.modelAssetsDir, f), "utf8"));
          cfg.torch_dtype = TORCH_DTYPE[o.dtype];
          writeDurable(join(tmp, f), JSON.stringify(cfg, null, 2) + "\n");
        } else {
          copyFileSync(join(o.modelAssetsDir, f), join(tmp, f));
          fsyncFile(join(tmp, f));
        }
      }
    }
    fsyncDir(tmp);
    replaceDir(tmp, o.saveDir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return listFiles(o.saveDir);
}
