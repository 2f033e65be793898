// `bun run infer --infer.model_path DIR [--infer.prompt TEXT | --infer.input_ids 1,42,99]
//   [--infer.do_sample false] [--infer.temperature T --infer.top_p P --infer.seed S]
//   [--infer.max_tokens N] [--infer.dump_logits FILE] [--kernels.threads N]`
// Loads a Hugging Face folder (or a merged checkpoint), prefills the prompt once, then decodes
// with a KV cache. --infer.dump_logits writes {"input_ids", "logits" (last prompt position, V
// floats), "prompt_loss" (mean next-token CE over the prompt), "generated"}.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { ConfigError, loadConfig } from "../configs/index.ts";
import { createKernels } from "../kernels/index.ts";
import { loadTokenizer, resolveTokenizer } from "../data/index.ts";
import { generate, loadPretrained, promptLoss } from "../models/index.ts";

async function main(argv: string[]): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(argv, "infer");
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`veomni-ts infer: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const { config } = loaded;
  const inf = config.infer;
  const modelPath = inf.model_path!;
  const tokPath = inf.tokenizer_path ?? config.model.tokenizer_path ?? modelPath;
  let ids: number[];
  if (inf.input_ids && inf.input_ids.length > 0) {
    ids = inf.input_ids;
  } else if (inf.prompt !== null) {
    const tk = loadTokenizer(tokPath);
    ids = [...(tk.addBos && tk.bosId !== null ? [tk.bosId] : []), ...tk.encode(inf.prompt)];
  } else {
    console.error("veomni-ts infer: give --infer.prompt TEXT (with a tokenizer.json) or --infer.input_ids 1,42,99");
    return 2;
  }
  if (ids.length === 0) {
    console.error("veomni-ts infer: the prompt encodes to zero tokens");
    return 2;
  }
  const k = await createKernels({ backend: config.kernels.backend, threads: config.kernels.threads || cpus().length });
  const model = loadPretrained(k, modelPath, {
    maxTokens: ids.length, gradientCheckpointing: true, maxPositions: Math.max(ids.length + inf.max_tokens, model_max(modelPath)),
  });
  const V = model.config.V;
  const bad = ids.find((t) => !(t >= 0 && t < V));
  if (bad !== undefined) {
    console.error(`veomni-ts infer: token id ${bad} is outside the vocabulary [0, ${V}) of ${modelPath}`);
    return 2;
  }
  const prompt = Int32Array.from(ids);
  const t0 = performance.now();
  const res = await generate(model, prompt, {
    maxTokens: inf.max_tokens, doSample: inf.do_sample, temperature: inf.temperature, topP: inf.top_p, seed: inf.seed,
    eosTokenIds: model.config.eosTokenIds,
  });
  const dt = (performance.now() - t0) / 1000;
  const loss = promptLoss(res.promptLogits, prompt, V);
  if (inf.dump_logits) {
    const last = Array.from(res.promptLogits.subarray((ids.length - 1) * V));
    writeFileSync(inf.dump_logits, JSON.stringify({ input_ids: ids, logits: last, prompt_loss: Number.isNaN(loss) ? null : loss, generated: res.generated }) + "\n");
  }
  console.log(JSON.stringify({ input_ids: ids, generated: res.generated }));
  const text = decode(tokPath, res.generated);
  if (text !== null) console.log(text);
  console.error(`veomni-ts infer: ${res.generated.length} tokens in ${dt.toFixed(2)} s (${(res.generated.length / dt).toFixed(1)} tok/s), prompt_loss ${loss.toFixed(4)}, ${k.description}`);
  return 0;
}

function model_max(dir: string): number {
  const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { max_position_embeddings?: number };
  return c.max_position_embeddings ?? 0;
}

/** Text of the generated ids when a tokenizer.json is available, else null. */
function decode(tokPath: string, ids: number[]): string | null {
  let dir: string;
  try {
    dir = resolveTokenizer(tokPath);
  } catch {
    return null;
  }
  const cfgPath = join(dir, "tokenizer_config.json");
  const cfg = existsSync(cfgPath) ? JSON.parse(readFileSync(cfgPath, "utf8")) : {};
  const tk = new HfTokenizer(JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")), cfg);
  return tk.decode(ids, { skip_special_tokens: false });
}

process.exitCode = await main(process.argv.slice(2));
