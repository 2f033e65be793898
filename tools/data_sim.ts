// bun run data-sim --config x.yaml [--launch.world_size N] [--save-at K --save-state F] [--load-state F]
// Runs the data pipeline without a model for every simulated data-parallel rank (VeOmni's
// data_sim): per step and rank it prints tokens, samples, valid tokens and a hash of the rank's
// micro-batches, so two runs, or a run resumed from a saved loader state, can be compared line
// by line. Padding micro-batches (data.drop_last false) count no tokens or samples. --save-at K --save-state F writes all ranks' loader states before step K;
// --load-state F restores them (onto any number of ranks) before the first step. The last line
// is one JSON object {steps, samples, tokens, hash} summed over all ranks (padding excluded).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { dataParallelSize, loadConfig } from "../configs/index.ts";
import { tokenizerSource } from "../actors/preflight.ts";
import { createDataLoader, loadVisionOptions, type DataLoader, type LoaderState, type MicroBatch } from "../data/index.ts";

function hashBatches(mbs: MicroBatch[], seed: bigint): bigint {
  let h = seed;
  for (const m of mbs) for (const a of [m.inputIds, m.labels, m.positionIds, m.cuSeqlens, m.imageGridThw, m.pixelValues]) if (a) h = BigInt(Bun.hash.xxHash64(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), h));
  return h;
}

/** vocab_size of the model: config.json under model.config_path or model.model_path. */
function modelVocab(cfgPath: string | null, modelPath: string | null): number | null {
  const p = cfgPath ?? (modelPath ? join(modelPath, "config.json") : null);
  if (!p || !existsSync(p)) return null;
  const j = JSON.parse(readFileSync(p, "utf8"));
  return j.vocab_size ?? j.text_config?.vocab_size ?? null;
}

const HELP = `usage: bun run data-sim --config FILE [--launch.world_size N] [--group.field VALUE ...]
                    [--save-at K --save-state FILE] [--load-state FILE]

Runs the data pipeline alone (no model) for every data-parallel rank the configuration implies
(launch.world_size over the parallel sizes) and prints, per step and rank, tokens, samples,
valid tokens, micro-batch sizes and a hash of the rank's micro-batches; the last line is one
JSON object {steps, samples, tokens, hash}. Compare two runs, or a resumed one, line by line.
  --save-at K --save-state FILE   write every rank's loader state before step K
  --load-state FILE               restore saved states (onto any number of ranks) first`;

export async function main(argv: string[]): Promise<void> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(HELP);
    return;
  }
  const { config, rest } = loadConfig(argv, "data");
  const flags = new Map<string, string>();
  for (let i = 0; i < rest.length; i += 2) {
    const k = rest[i];
    if (!["--save-at", "--save-state", "--load-state"].includes(k) || rest[i + 1] === undefined)
      throw new Error(`data-sim: unknown or incomplete option ${k}; expected --save-at K --save-state FILE, --load-state FILE`);
    flags.set(k, rest[i + 1]);
  }
  const dp = dataParallelSize(config);
  const tokenizerPath = tokenizerSource(config);
  const vision = loadVisionOptions(config.model.config_path, config.model.model_path);
  const loaders: DataLoader[] = [];
  for (let r = 0; r < dp; r++) {
    const vocab = modelVocab(config.model.config_path, config.model.model_path);
    loaders.push(createDataLoader(config, { dpRank: r, dpSize: dp, vocabSize: vocab ?? Number.MAX_SAFE_INTEGER, tokenizerPath, vision }));
  }
  const info = loaders[0].info;
  console.log(`data-sim: dp ${dp}, ${info.files} file(s), ${info.totalSamples} samples/epoch, grad accum ${info.gradAccum}, budget ${info.budget} tokens, tokenizer ${tokenizerPath ?? "none"}`);
  if (flags.has("--load-state")) {
    const states = JSON.parse(readFileSync(flags.get("--load-state")!, "utf8")) as LoaderState[];
    for (const l of loaders) await l.restore(states);
    console.log(`data-sim: restored ${states.length} rank state(s) at step ${states[0].step}`);
  }
  const saveAt = flags.has("--save-at") ? Number(flags.get("--save-at")) : -1;
  let steps = 0, samples = 0, tokens = 0, hash = 0n;
  for (;;) {
    const step = loaders[0].state().step;
    if (step === saveAt && flags.has("--save-state")) {
      const f = resolve(flags.get("--save-state")!);
      writeFileSync(f, JSON.stringify(loaders.map((l) => l.state())));
      console.log(`data-sim: saved ${dp} rank state(s) before step ${step} to ${f}`);
    }
    const batches = [];
    for (const l of loaders) batches.push(await l.nextStep());
    if (batches.some((b) => b === null)) break; // SPMD: every rank must have the step
    for (let r = 0; r < dp; r++) {
      const b = batches[r]!;
      let t = 0, s = 0, v = 0, im = 0;
      for (const m of b.microBatches) if (!m.padding) { t += m.inputIds.length; s += m.cuSeqlens.length - 1; v += m.validTokens; im += (m.imageGridThw?.length ?? 0) / 3; }
      const h = hashBatches(b.microBatches, 0n);
      hash = hashBatches(b.microBatches, hash);
      samples += s; tokens += t;
      console.log(`step ${b.step} rank ${r}: tokens ${t} samples ${s} valid ${v}${vision ? ` images ${im}` : ""} micro ${b.microBatches.map((m) => (m.padding ? "pad" : m.inputIds.length)).join(",")} hash ${h.toString(16).padStart(16, "0")}`);
    }
    steps++;
  }
  const skipped = loaders.reduce((a, l) => a + l.skipped, 0);
  if (skipped) console.log(`data-sim: ${skipped} bad sample(s) skipped`);
  if (tokenizerPath) console.log(`data-sim: tokenizer ${loaders[0].tokenizerEngine ?? "never loaded (pre-tokenized rows only)"}`);
  console.log(JSON.stringify({ steps, samples, tokens, hash: hash.toString(16).padStart(16, "0") }));
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(`data-sim: ${(e as Error).message}`);
    process.exit(1);
  });
}

