// One raw row -> one training sample (token ids + HF-convention labels), or the reason it is bad.
//   pre-tokenized  {input_ids: int[], labels?: int[]}   passes through (any data_type)
//   plaintext      row[text_key] (or a txt paragraph)   [BOS if the tokenizer adds one] + ids + EOS, cut to max_seq_len
//   conversation   row[text_key = "messages"]           chat template segments, labels -100 off assistant turns
//   images         row[image_key] with a conversation or input_ids: see multimodal.ts
// Conversation and pre-tokenized samples longer than max_seq_len are bad samples (not cut: a cut
// conversation can lose its answer). Every message names the file and line/row.
import { IGNORE_INDEX } from "./batch.ts";
import { BadRow, type RawRow } from "./sources.ts";
import type { Segment, Message } from "./templates.ts";
import { parseMessages } from "./templates.ts";
import type { TextTokenizer } from "./tokenizer.ts";
import type { ResizedImage } from "./images/qwen2vl.ts";
import { imageTokens } from "./images/qwen2vl.ts";
import { countPlaceholders, encodeWithImages, expandImageTokens, IMAGE_PLACEHOLDER, imageList, loadRowImages, type VisionOptions } from "./multimodal.ts";

export interface Sample {
  /** (L) token ids, image tokens included. */
  ids: Int32Array;
  /** (L) labels, not shifted; IGNORE_INDEX where no loss. */
  labels: Int32Array;
  /** The sample's images in the order their tokens appear, resized, not yet normalised. */
  images?: ResizedImage[];
}

export interface SampleSpec {
  dataType: "plaintext" | "conversation";
  /** data.text_keys split at commas; the first key present in a row is used. */
  keys: string[];
  maxSeqLen: number;
  /** Model vocabulary size: every id must be below it. */
  vocabSize: number;
  tokenizer: TextTokenizer | null;
  template: ((msgs: Message[]) => Segment[]) | null;
  /** data.image_keys split at commas (absent: no images read). */
  imageKeys?: string[];
  /** The model's vision token ids and processor; null or absent for a text model. */
  vision?: VisionOptions | null;
}

export type SampleResult = Sample | { bad: string };

export function defaultKeys(dataType: "plaintext" | "conversation", textKeys: string | null | undefined): string[] {
  if (textKeys) return textKeys.split(",").map((s) => s.trim()).filter(Boolean);
  return dataType === "plaintext" ? ["text"] : ["messages"];
}

function pick(v: Record<string, unknown>, keys: string[]): { key: string; value: unknown } | null {
  for (const k of keys) if (k in v) return { key: k, value: v[k] };
  return null;
}

function intArray(v: unknown): Int32Array | null {
  if (!Array.isArray(v) && !ArrayBuffer.isView(v)) return null;
  const a = v as ArrayLike<unknown>;
  const out = new Int32Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const x = typeof a[i] === "bigint" ? Number(a[i]) : a[i];
    if (typeof x !== "number" || !Number.isInteger(x)) return null;
    out[i] = x;
  }
  return out;
}

/** The row's images, decoded and resized (null: none), or why they cannot be used. */
function rowImages(row: RawRow, spec: SampleSpec): ResizedImage[] | null | { bad: string } {
  const v = row.value;
  const keys = spec.imageKeys ?? [];
  if (!v || typeof v !== "object" || Array.isArray(v) || keys.length === 0) return null;
  const il = imageList(v as Record<string, unknown>, keys);
  if (!il) return null;
  if ("bad" in il) return { bad: `${row.where}: ${il.bad}` };
  if (il.items.length === 0) return null;
  if (!spec.vision) return { bad: `${row.where}: column '${il.key}' holds images but the model is not a vision-language model (its config.json has no image_token_id)` };
  if (!spec.vision.preprocessor) return { bad: `${row.where}: column '${il.key}' holds images but ${spec.vision.preprocessorPath} does not exist` };
  const imgs = loadRowImages(il.items, il.key, row.file ?? null, spec.vision.preprocessor);
  return typeof imgs === "string" ? { bad: `${row.where}: ${imgs}` } : imgs;
}

export function makeSample(row: RawRow, spec: SampleSpec): SampleResult {
  const at = row.where;
  const v = row.value;
  if (v instanceof BadRow) return { bad: v.message };
  const images = rowImages(row, spec);
  if (images && "bad" in images) return images;
  const pp = spec.vision?.preprocessor;
  const tokensPerImage = images ? images.map((im) => imageTokens(im.grid, pp!)) : [];
  let s: Sample;
  if (v && typeof v === "object" && !Array.isArray(v) && "input_ids" in v) {
    let ids = intArray((v as any).input_ids);
    if (!ids) return { bad: `${at}: column 'input_ids': expected an array of integers` };
    let labels: Int32Array = ids.slice();
    if ("labels" in v && (v as any).labels != null) {
      const l = intArray((v as any).labels);
      if (!l || l.length !== ids.length) return { bad: `${at}: column 'labels': expected an array of ${ids.length} integers (as input_ids)` };
      labels = l;
    }
    if (spec.vision) {
      const x = expandImageTokens(ids, labels, tokensPerImage, spec.vision);
      if (typeof x === "string") return { bad: `${at}: ${x}` };
      ({ ids, labels } = x);
    }
    if (ids.length > spec.maxSeqLen) return { bad: `${at}: sample of ${ids.length} tokens${imageNote(tokensPerImage)} is longer than data.max_seq_len ${spec.maxSeqLen}` };
    s = { ids, labels };
  } else {
    const tk = spec.tokenizer;
    if (!tk) return { bad: `${at}: text sample but no tokenizer (model.tokenizer_path)` };
    let value: unknown;
    let key = "(text)";
    if (typeof v === "string") value = v; // txt paragraph
    else if (v && typeof v === "object" && !Array.isArray(v)) {
      const p = pick(v as Record<string, unknown>, spec.keys);
      if (!p) return { bad: `${at}: missing column ${spec.keys.map((k) => `'${k}'`).join(" or ")} (data.text_keys)` };
      key = p.key; value = p.value;
    } else return { bad: `${at}: expected a JSON object, got ${Array.isArray(v) ? "an array" : typeof v}` };
    if (spec.dataType === "plaintext") {
      if (images) return { bad: `${at}: images need data_type: conversation (or input_ids with image tokens); this row is plaintext` };
      if (typeof value !== "string") return { bad: `${at}: column '${key}': expected a string, got ${value === null ? "null" : typeof value}` };
      // nothing to learn from (it would train on BOS/EOS alone)
      if (value.trim() === "") return { bad: `${at}: column '${key}': empty text${value.length ? " (only whitespace)" : ""}` };
      const ids = tk.encode(value);
      if (tk.addBos) ids.unshift(tk.bosId!);
      if (tk.eosId !== null) ids.push(tk.eosId);
      const cut = Int32Array.from(ids.length > spec.maxSeqLen ? ids.slice(0, spec.maxSeqLen) : ids);
      s = { ids: cut, labels: cut.slice() };
    } else {
      const msgs = parseMessages(value);
      if (typeof msgs === "string") return { bad: `${at}: column '${key}': ${msgs}` };
      let segs: Segment[];
      try { segs = spec.template!(msgs); } catch (e) { return { bad: `${at}: ${(e as Error).message}` }; }
      // a text model keeps "<image>" as text; a vision model needs one image per placeholder
      const placeholders = spec.vision ? segs.reduce((n, seg) => n + countPlaceholders(seg.text), 0) : 0;
      if (placeholders !== tokensPerImage.length)
        return { bad: `${at}: ${placeholders} ${IMAGE_PLACEHOLDER} placeholder(s) in the messages but ${tokensPerImage.length} image(s) in data.image_keys ${(spec.imageKeys ?? []).map((k) => `'${k}'`).join(" or ")}` };
      const ids: number[] = [];
      const labels: number[] = [];
      if (tk.addBos && !segs[0]?.text.startsWith(tk.bosToken!)) { ids.push(tk.bosId!); labels.push(IGNORE_INDEX); }
      let next = 0;
      for (const seg of segs) {
        if (spec.vision) next = encodeWithImages(seg.text, seg.train, (t) => tk.encode(t), tokensPerImage, next, spec.vision, ids, labels);
        else for (const id of tk.encode(seg.text)) { ids.push(id); labels.push(seg.train ? id : IGNORE_INDEX); }
      }
      if (ids.length > spec.maxSeqLen) return { bad: `${at}: conversation of ${ids.length} tokens${imageNote(tokensPerImage)} is longer than data.max_seq_len ${spec.maxSeqLen}` };
      s = { ids: Int32Array.from(ids), labels: Int32Array.from(labels) };
    }
  }
  if (s.ids.length === 0) return { bad: `${at}: empty sample (no tokens)` };
  if (images) s.images = images;
  for (let i = 0; i < s.ids.length; i++) {
    const id = s.ids[i];
    if (id < 0 || id >= spec.vocabSize) return { bad: `${at}: token id ${id} at position ${i} is outside the vocabulary [0, ${spec.vocabSize})` };
    const l = s.labels[i];
    if (l !== IGNORE_INDEX && (l < 0 || l >= spec.vocabSize)) return { bad: `${at}: label ${l} at position ${i} is outside the vocabulary [0, ${spec.vocabSize}) and not ${IGNORE_INDEX}` };
  }
  return s;
}

function imageNote(tokensPerImage: number[]): string {
  if (tokensPerImage.length === 0) return "";
  return ` (${tokensPerImage.reduce((a, b) => a + b, 0)} of them for ${tokensPerImage.length} image(s): ${tokensPerImage.join(", ")}; max_pixels in preprocessor_config.json bounds them)`;
}
