// Images in samples (VeOmni's multimodal conversation format, Qwen2-VL's tokens):
//   conversation  {"messages": [{role, content: "...<image>..."}], "images": ["a.png", ...]}
//                 each "<image>" placeholder, in order, becomes <|vision_start|> +
//                 <|image_pad|> x (t*h*w / merge^2) + <|vision_end|>, labels -100 on all of them.
//                 Paths are relative to the data file; parquet cells may hold the bytes (binary,
//                 or Hugging Face's Image struct {bytes, path}).
//   pre-tokenized {"input_ids": [...], "images": [...]}: each run of image_token_id is one image,
//                 either already n long or a single token expanded to n; labels -100 on the
//                 vision tokens.
// The column is the first of data.image_keys present. Token ids come from the model's
// config.json (image_token_id, vision_start_token_id, vision_end_token_id); the processor from
// its preprocessor_config.json.
import { existsSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { IGNORE_INDEX } from "./batch.ts";
import { decodeImage } from "./images/decode.ts";
import { imageTokens, loadPreprocessorConfig, resizeForModel, type PreprocessorConfig, type ResizedImage } from "./images/qwen2vl.ts";

export const IMAGE_PLACEHOLDER = "<image>";

export interface VisionOptions {
  imageTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  /** null: the model folder has no preprocessor_config.json (a sample with images is then bad). */
  preprocessor: PreprocessorConfig | null;
  /** Where the preprocessor config was looked for (for that error). */
  preprocessorPath: string;
}

/** A vision-language model's ids and processor, from config.json (`configPath`, else
 *  `<modelPath>/config.json`) and preprocessor_config.json beside it; null for a text model
 *  (no image_token_id) or when there is no config.json. */
export function loadVisionOptions(configPath: string | null, modelPath: string | null, cwd = process.cwd()): VisionOptions | null {
  const cfgFile = configPath ? resolve(cwd, configPath) : modelPath ? join(resolve(cwd, modelPath), "config.json") : null;
  if (!cfgFile || !existsSync(cfgFile)) return null;
  const j = JSON.parse(readFileSync(cfgFile, "utf8"));
  const get = (k: string): unknown => j[k] ?? j.text_config?.[k];
  if (get("image_token_id") == null) return null;
  const ids = ["image_token_id", "vision_start_token_id", "vision_end_token_id"].map((k) => {
    const v = get(k);
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new Error(`${cfgFile}: '${k}' must be a token id, got ${JSON.stringify(v)}`);
    return v;
  });
  const dir = modelPath ? resolve(cwd, modelPath) : dirname(cfgFile);
  const ppPath = join(dir, "preprocessor_config.json");
  return {
    imageTokenId: ids[0], visionStartTokenId: ids[1], visionEndTokenId: ids[2],
    preprocessor: existsSync(ppPath) ? loadPreprocessorConfig(ppPath) : null, preprocessorPath: ppPath,
  };
}

/** The row's image list (first of `keys` present), or [] when no key is present or it is null. */
export function imageList(row: Record<string, unknown>, keys: string[]): { key: string; items: unknown[] } | { bad: string } | null {
  for (const k of keys) {
    if (!(k in row) || row[k] == null) continue;
    const v = row[k];
    if (!Array.isArray(v)) return { bad: `column '${k}' (data.image_keys): expected a list of image paths or bytes, got ${typeof v}` };
    return { key: k, items: v };
  }
  return null;
}

/** Decodes and resizes every image of a row; an error string names the image. */
export function loadRowImages(items: unknown[], key: string, dataFile: string | null, pp: PreprocessorConfig): ResizedImage[] | string {
  const out: ResizedImage[] = [];
  for (let i = 0; i < items.length; i++) {
    let it = items[i] as any;
    let name = `image ${i}`;
    try {
      if (it && typeof it === "object" && !ArrayBuffer.isView(it) && ("bytes" in it || "path" in it)) it = it.bytes ?? it.path; // HF Image struct
      let bytes: Uint8Array;
      if (typeof it === "string") {
        const p = isAbsolute(it) || !dataFile ? it : join(dirname(dataFile), it);
        name = `image ${i} '${p}'`;
        if (!existsSync(p)) throw new Error("file not found");
        bytes = new Uint8Array(readFileSync(p));
      } else if (it instanceof Uint8Array) bytes = it;
      else throw new Error(`expected a path or bytes, got ${it === null ? "null" : typeof it}`);
      out.push(resizeForModel(decodeImage(bytes), pp));
    } catch (e) {
      return `column '${key}' ${name}: ${(e as Error).message}`;
    }
  }
  return out;
}

/** ids and labels of one image in the text: vision_start, image_pad x n, vision_end; labels -100. */
export function pushImageTokens(ids: number[], labels: number[], n: number, v: VisionOptions): void {
  ids.push(v.visionStartTokenId); labels.push(IGNORE_INDEX);
  for (let k = 0; k < n; k++) { ids.push(v.imageTokenId); labels.push(IGNORE_INDEX); }
  ids.push(v.visionEndTokenId); labels.push(IGNORE_INDEX);
}

/** Counts "<image>" placeholders in a text. */
export function countPlaceholders(text: string): number {
  let n = 0;
  for (let at = text.indexOf(IMAGE_PLACEHOLDER); at >= 0; at = text.indexOf(IMAGE_PLACEHOLDER, at + IMAGE_PLACEHOLDER.length)) n++;
  return n;
}

/** Tokenizes `text`, putting the image tokens of images[next...] at each "<image>"; text labels
 *  are the ids when `train`, else -100. Returns the next image index. */
export function encodeWithImages(text: string, train: boolean, encode: (s: string) => number[], tokensPerImage: number[], next: number,
  v: VisionOptions | null, ids: number[], labels: number[]): number {
  const parts = text.split(IMAGE_PLACEHOLDER);
  parts.forEach((part, i) => {
    if (i > 0) pushImageTokens(ids, labels, tokensPerImage[next++], v!);
    if (part === "") return;
    for (const id of encode(part)) { ids.push(id); labels.push(train ? id : IGNORE_INDEX); }
  });
  return next;
}

/** Pre-tokenized ids with vision placeholders -> ids with each image's run of image_token_id
 *  exactly n long (a single token is expanded) and labels -100 on every vision token. */
export function expandImageTokens(ids: Int32Array, labels: Int32Array, tokensPerImage: number[], v: VisionOptions): { ids: Int32Array; labels: Int32Array } | string {
  const outIds: number[] = [], outLabels: number[] = [];
  let img = 0;
  for (let i = 0; i < ids.length;) {
    const id = ids[i];
    if (id !== v.imageTokenId) {
      outIds.push(id);
      outLabels.push(id === v.visionStartTokenId || id === v.visionEndTokenId ? IGNORE_INDEX : labels[i]);
      i++;
      continue;
    }
    let j = i;
    while (j < ids.length && ids[j] === v.imageTokenId) j++;
    const run = j - i;
    if (img >= tokensPerImage.length) return `input_ids hold more runs of image_token_id ${v.imageTokenId} than the ${tokensPerImage.length} image(s) given`;
    const n = tokensPerImage[img];
    if (run !== n && run !== 1) return `image ${img} takes ${n} image tokens but input_ids hold a run of ${run} image_token_id at position ${i} (expected ${n}, or 1 to expand)`;
    for (let k = 0; k < n; k++) { outIds.push(v.imageTokenId); outLabels.push(IGNORE_INDEX); }
    img++;
    i = j;
  }
  if (img !== tokensPerImage.length) return `input_ids hold ${img} run(s) of image_token_id ${v.imageTokenId} but ${tokensPerImage.length} image(s) are given`;
  return { ids: Int32Array.from(outIds), labels: Int32Array.from(outLabels) };
}

/** For the inference CLI: what Qwen2-VL's chat template (tokenizer_config.json) renders for one
 *  user turn of `nImages` images then the text, with add_generation_prompt: the default system
 *  message, the images first, the prompt as is, then "<|im_start|>assistant\n". Each image is
 *  left as an "<image>" placeholder for tokenizeWithImages; a prompt that already holds
 *  `nImages` placeholders keeps them where they are. */
export function qwen2vlChatPrompt(prompt: string, nImages: number): string {
  const have = countPlaceholders(prompt);
  if (have !== 0 && have !== nImages) throw new Error(`${have} ${IMAGE_PLACEHOLDER} placeholder(s) in the prompt but ${nImages} image(s)`);
  const user = have ? prompt : IMAGE_PLACEHOLDER.repeat(nImages) + prompt;
  return `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n${user}<|im_end|>\n<|im_start|>assistant\n`;
}

/** For the inference CLI: chat text with "<image>" placeholders -> ids, with each image's
 *  tokens in place (labels dropped). */
export function tokenizeWithImages(text: string, encode: (s: string) => number[], grids: ArrayLike<number>, pp: PreprocessorConfig, v: VisionOptions): number[] {
  const tokensPerImage: number[] = [];
  for (let i = 0; i < grids.length; i += 3) tokensPerImage.push(imageTokens([grids[i], grids[i + 1], grids[i + 2]], pp));
  const n = countPlaceholders(text);
  if (n !== tokensPerImage.length) throw new Error(`${n} ${IMAGE_PLACEHOLDER} placeholder(s) in the prompt but ${tokensPerImage.length} image(s)`);
  const ids: number[] = [], labels: number[] = [];
  encodeWithImages(text, false, encode, tokensPerImage, 0, v, ids, labels);
  return ids;
}
