// bun run merge --load-dir OUT/checkpoints/global_step_N --model_assets_dir OUT/model_assets
//               --save-dir OUT/checkpoints/global_step_N/hf_ckpt [--shard-size 5GB] [--dtype bf16]
// Turns a sharded checkpoint into a Hugging Face folder (checkpoint/merge.ts). Flags take
// dashes or underscores, `--flag value` or `--flag=value`. The whole-file CRC of every shard
// read is checked against metadata.json; `--no-verify` skips that (piece CRCs are always checked).
import { mergeToHf, parseDType, parseSize } from "../checkpoint/index.ts";

const USAGE = "usage: bun run merge --load-dir DIR [--model_assets_dir DIR] --save-dir DIR [--shard-size 5GB] [--dtype bf16|f16|f32] [--no-verify]";

export function parseMergeArgs(argv: string[]) {
  const flags = new Map<string, string>();
  let verify = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--no-verify" || a === "--no_verify") {
      verify = false;
      continue;
    }
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}\n${USAGE}`);
    const eq = a.indexOf("=");
    const key = (eq > 0 ? a.slice(2, eq) : a.slice(2)).replaceAll("-", "_");
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new Error(`--${key} needs a value\n${USAGE}`);
    flags.set(key, value);
  }
  const known = ["load_dir", "model_assets_dir", "save_dir", "shard_size", "dtype"];
  for (const k of flags.keys()) if (!known.includes(k)) throw new Error(`unknown flag --${k} (known: ${known.map((x) => "--" + x).join(", ")})\n${USAGE}`);
  const loadDir = flags.get("load_dir"), saveDir = flags.get("save_dir");
  if (!loadDir || !saveDir) throw new Error(`--load-dir and --save-dir are required\n${USAGE}`);
  return {
    loadDir, saveDir,
    modelAssetsDir: flags.get("model_assets_dir") ?? null,
    shardBytes: parseSize(flags.get("shard_size") ?? "5GB"),
    dtype: parseDType(flags.get("dtype") ?? "bf16"),
    verify,
  };
}

if (import.meta.main) {
  try {
    const o = parseMergeArgs(process.argv.slice(2));
    const t0 = performance.now();
    const files = mergeToHf(o);
    console.log(`merged ${o.loadDir} -> ${o.saveDir} (${o.dtype}) in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${files.join(", ")}`);
  } catch (e) {
    console.error(`merge: ${(e as Error).message}`);
    process.exit(1);
  }
}
