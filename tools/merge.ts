// bun run merge --load-dir OUT/checkpoints/global_step_N --model_assets_dir OUT/model_assets
//               --save-dir OUT/checkpoints/global_step_N/hf_ckpt [--shard-size 5GB] [--dtype bf16]
// Turns a sharded checkpoint into a Hugging Face folder (checkpoint/merge.ts). Flags take
// dashes or underscores, `--flag value` or `--flag=value`. The whole-file CRC of every shard
// read is checked against metadata.json; `--no-verify` skips that (piece CRCs are always checked).
import { mergeToHf, parseDType, parseSize } from "../checkpoint/index.ts";

const USAGE = "usage: bun run merge --load-dir DIR [--model_assets_dir DIR] --save-dir DIR [--shard-size 5GB] [--dtype bf16|f16|f32] [--no-verify]";
const HELP = `${USAGE}

Turns a sharded checkpoint (OUTPUT_DIR/checkpoints/global_step_N) into a Hugging Face folder:
model*.safetensors (+ index when sharded), config.json and the tokenizer files.
  --load-dir DIR          the checkpoint folder (must hold metadata.json: a committed save)
  --model_assets_dir DIR  config.json and tokenizer files to copy beside the weights (OUTPUT_DIR/model_assets;
                          without it only the weights are written)
  --save-dir DIR          where the Hugging Face folder goes (written to a temporary name, then renamed)
  --shard-size SIZE       largest safetensors file, e.g. 5GB, 500MB (default 5GB)
  --dtype bf16|f16|f32    the weights' dtype in the files (default bf16, as Hugging Face checkpoints;
                          f32 keeps the float32 master weights exactly)
  --no-verify             skip the whole-file CRC check of each shard against metadata.json (faster;
                          the CRC of every piece read is still checked)
Flags take dashes or underscores, --flag value or --flag=value.`;

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
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    console.log(HELP);
    process.exit(0);
  }
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
