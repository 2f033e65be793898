// `bun run infer --infer.model_path DIR [--infer.prompt TEXT [--infer.chat true] | --infer.input_ids 1,42,99]
//   [--infer.do_sample false] [--infer.temperature T --infer.top_p P --infer.seed S]
//   [--infer.max_tokens N] [--infer.dump_logits FILE] [--infer.images a.png,b.jpg] [--kernels.threads N]`
// Loads a Hugging Face folder (or a merged checkpoint), prefills the prompt once, then decodes
// with a KV cache, printing the text as each token arrives (with a tokenizer.json). The last
// stdout line is {"input_ids", "generated"}. --infer.dump_logits writes {"input_ids", "logits"
// (last prompt position, V floats), "prompt_loss" (mean next-token CE over the prompt; VL: vision
// tokens carry none), "generated"}. Vision-language models (qwen2_vl, qwen2_5_vl) take
// --infer.images, preprocessed as Qwen2VLImageProcessor with the folder's preprocessor_config.json:
// a text prompt goes through the Qwen2-VL chat template (images first unless it holds "<image>"
// placeholders); input_ids keep their placeholders (each run of image_token_id, one token or
// already n long, is one image).
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { ConfigError, fieldsHelp, loadConfig } from "../configs/index.ts";
import { createKernels } from "../kernels/index.ts";
import {
  expandImageTokens, imageTokens, loadTokenizer, loadVisionOptions, preprocessImages, qwen2vlChatPrompt, tokenizeWithImages, type TextTokenizer,
} from "../data/index.ts";
import { generate, loadPretrained, promptLoss } from "../models/index.ts";

const HELP = `usage: bun run infer --infer.model_path DIR (--infer.prompt TEXT | --infer.input_ids 1,42,99) [--infer.field VALUE ...]

Generates a continuation of the prompt with the model in DIR (a Hugging Face folder, e.g. a
checkpoint merged by bun run merge), streaming the text as it is generated.
  --infer.chat true       apply the tokenizer's chat template to the prompt (a user turn; SFT models)
  --infer.images a,b      images for a vision-language model (Qwen2-VL chat template applied to the prompt)
  --infer.max_tokens N    tokens to generate at most (default 128: seconds on a CPU)
  --infer.do_sample false greedy decoding (default: sampling with temperature and top_p, seeded)
  --kernels.threads N     compute threads (default: all cores)
Fields:
`;

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(HELP + fieldsHelp(["infer", "kernels"]));
    return 0;
  }
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
  const { config, rest } = loaded;
  if (rest.length > 0) {
    console.error(`veomni-ts infer: unexpected argument(s) ${rest.join(" ")} (see --help)`);
    return 2;
  }
  const inf = config.infer;
  const modelPath = inf.model_path!;
  const tokPath = inf.tokenizer_path ?? config.model.tokenizer_path ?? modelPath;
  let tk: TextTokenizer | null = null;
  const tokenizer = (): TextTokenizer => (tk ??= loadTokenizer(tokPath));
  let ids: number[];
  let chatEos: number[] = [];
  const imgPaths = inf.images ?? [];
  let images: { pixelValues: Float32Array; imageGridThw: Int32Array } | undefined;
  try {
    const vision = imgPaths.length ? loadVisionOptions(null, modelPath) : null;
    if (imgPaths.length) {
      if (!vision?.preprocessor) {
        throw new Error(`--infer.images needs a vision-language model with preprocessor_config.json; ${modelPath} has ${vision ? "no preprocessor_config.json" : "no image_token_id in config.json"}`);
      }
      const pre = await preprocessImages(imgPaths, vision.preprocessor);
      images = { pixelValues: pre.pixelValues, imageGridThw: pre.imageGridThw };
    }
    if (inf.input_ids && inf.input_ids.length > 0) {
      ids = inf.input_ids;
      if (images && vision) {
        const g = images.imageGridThw, per: number[] = [];
        for (let i = 0; i < g.length; i += 3) per.push(imageTokens([g[i], g[i + 1], g[i + 2]], vision.preprocessor!));
        const x = Int32Array.from(ids);
        const r = expandImageTokens(x, x, per, vision);
        if (typeof r === "string") throw new Error(`--infer.input_ids: ${r}`);
        ids = Array.from(r.ids);
      }
    } else if (inf.prompt !== null) {
      const t = tokenizer();
      if (images && vision) {
        ids = tokenizeWithImages(qwen2vlChatPrompt(inf.prompt, imgPaths.length), (s) => t.encode(s), images.imageGridThw, vision.preprocessor!, vision);
        if (t.eosId !== null) chatEos = [t.eosId];
      } else if (inf.chat) {
        if (!t.chatTemplate) throw new Error(`--infer.chat: ${t.dir} has no chat_template in tokenizer_config.json`);
        const text = new Template(t.chatTemplate).render({
          messages: [{ role: "user", content: inf.prompt }], add_generation_prompt: true, bos_token: t.bosToken ?? "", eos_token: t.eosToken ?? "",
        });
        ids = t.encode(text);
        if (t.eosId !== null) chatEos = [t.eosId]; // the end of the assistant's turn
      } else ids = [...(t.addBos && t.bosId !== null ? [t.bosId] : []), ...t.encode(inf.prompt)];
    } else {
      console.error("veomni-ts infer: give --infer.prompt TEXT (with a tokenizer.json) or --infer.input_ids 1,42,99 (see --help)");
      return 2;
    }
  } catch (e) {
    console.error(`veomni-ts infer: ${(e as Error).message.split("\n")[0]}`);
    return 2;
  }
  if (ids.length === 0) {
    console.error("veomni-ts infer: the prompt encodes to zero tokens");
    return 2;
  }
  const k = await createKernels({ backend: config.kernels.backend, threads: config.kernels.threads || cpus().length });
  let model;
  try {
    model = loadPretrained(k, modelPath, {
      maxTokens: ids.length, gradientCheckpointing: true, maxPositions: Math.max(ids.length + inf.max_tokens, model_max(modelPath)),
    });
  } catch (e) {
    console.error(`veomni-ts infer: --infer.model_path: ${(e as Error).message.split("\n")[0]}`);
    return 2;
  }
  const V = model.config.V;
  const bad = ids.find((t) => !(t >= 0 && t < V));
  if (bad !== undefined) {
    console.error(`veomni-ts infer: token id ${bad} is outside the vocabulary [0, ${V}) of ${modelPath}`);
    return 2;
  }
  const prompt = Int32Array.from(ids);
  // Streaming: decode everything so far and print what is new, holding back a trailing U+FFFD
  // (a character whose bytes are split over tokens).
  let streamTk: TextTokenizer | null = null;
  try {
    streamTk = tokenizer();
  } catch {
    streamTk = null; // no tokenizer.json: ids only
  }
  const soFar: number[] = [];
  let shown = "";
  const onToken = streamTk
    ? (id: number) => {
        soFar.push(id);
        const text = streamTk!.decode(soFar);
        if (text.endsWith("\uFFFD") || !text.startsWith(shown)) return;
        process.stdout.write(text.slice(shown.length));
        shown = text;
      }
    : undefined;
  const t0 = performance.now();
  let res;
  try {
    res = await generate(model, prompt, {
      maxTokens: inf.max_tokens, doSample: inf.do_sample, temperature: inf.temperature, topP: inf.top_p, seed: inf.seed,
      eosTokenIds: [...model.config.eosTokenIds, ...chatEos], onToken, images,
    });
  } catch (e) {
    console.error(`veomni-ts infer: ${(e as Error).message.split("\n")[0]}`);
    return 2;
  }
  const dt = (performance.now() - t0) / 1000;
  if (streamTk) {
    const text = streamTk.decode(res.generated);
    process.stdout.write((text.startsWith(shown) ? text.slice(shown.length) : "") + "\n");
  }
  const mm = model.config.mm;
  const loss = promptLoss(res.promptLogits, prompt, V, new Set(mm ? [mm.visionStartTokenId, mm.imageTokenId, mm.visionEndTokenId] : []));
  if (inf.dump_logits) {
    const last = Array.from(res.promptLogits.subarray((ids.length - 1) * V));
    writeFileSync(inf.dump_logits, JSON.stringify({ input_ids: ids, logits: last, prompt_loss: Number.isNaN(loss) ? null : loss, generated: res.generated }) + "\n");
  }
  console.log(JSON.stringify({ input_ids: ids, generated: res.generated }));
  console.error(`veomni-ts infer: ${res.generated.length} tokens in ${dt.toFixed(2)} s (${(res.generated.length / dt).toFixed(1)} tok/s), prompt_loss ${loss.toFixed(4)}, ${k.description}`);
  return 0;
}

function model_max(dir: string): number {
  const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { max_position_embeddings?: number };
  return c.max_position_embeddings ?? 0;
}

process.exitCode = await main(process.argv.slice(2));
