// One raw row -> one training sample (token ids + HF-convention labels), or the reason it is bad.
//   pre-tokenized  {input_ids: int[], labels?: int[]}   passes through (any data_type)
//   plaintext      row[text_key] (or a txt paragraph)   [BOS if the tokenizer adds one] + ids + EOS, cut to max_seq_len
//   conversation   row[text_key = "messages"]           chat template segments, labels -100 off assistant turns
// Conversation and pre-tokenized samples longer than max_seq_len are bad samples (not cut: a cut
// conversation can lose its answer). Every message names the file and line/row.
import { IGNORE_INDEX } from "./batch.ts";
import { BadRow, type RawRow } from "./sources.ts";
import type { Segment, Message } from "./templates.ts";
import { parseMessages } from "./templates.ts";
import type { TextTokenizer } from "./tokenizer.ts";

export interface Sample {
  /** (L) token ids. */
  ids: Int32Array;
  /** (L) labels, not shifted; IGNORE_INDEX where no loss. */
  labels: Int32Array;
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

export function makeSample(row: RawRow, spec: SampleSpec): SampleResult {
  const at = row.where;
  const v = row.value;
  if (v instanceof BadRow) return { bad: v.message };
  let s: Sample;
  if (v && typeof v === "object" && !Array.isArray(v) && "input_ids" in v) {
    const ids = intArray((v as any).input_ids);
    if (!ids) return { bad: `${at}: column 'input_ids': expected an array of integers` };
    let labels: Int32Array = ids.slice();
    if ("labels" in v && (v as any).labels != null) {
      const l = intArray((v as any).labels);
      if (!l || l.length !== ids.length) return { bad: `${at}: column 'labels': expected an array of ${ids.length} integers (as input_ids)` };
      labels = l;
    }
    if (ids.length > spec.maxSeqLen) return { bad: `${at}: sample of ${ids.length} tokens is longer than data.max_seq_len ${spec.maxSeqLen}` };
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
      if (typeof value !== "string") return { bad: `${at}: column '${key}': expected a string, got ${value === null ? "null" : typeof value}` };
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
      const ids: number[] = [];
      const labels: number[] = [];
      if (tk.addBos && !segs[0]?.text.startsWith(tk.bosToken!)) { ids.push(tk.bosId!); labels.push(IGNORE_INDEX); }
      for (const seg of segs) {
        const t = tk.encode(seg.text);
        for (const id of t) { ids.push(id); labels.push(seg.train ? id : IGNORE_INDEX); }
      }
      if (ids.length > spec.maxSeqLen) return { bad: `${at}: conversation of ${ids.length} tokens is longer than data.max_seq_len ${spec.maxSeqLen}` };
      s = { ids: Int32Array.from(ids), labels: Int32Array.from(labels) };
    }
  }
  if (s.ids.length === 0) return { bad: `${at}: empty sample (no tokens)` };
  for (let i = 0; i < s.ids.length; i++) {
    const id = s.ids[i];
    if (id < 0 || id >= spec.vocabSize) return { bad: `${at}: token id ${id} at position ${i} is outside the vocabulary [0, ${spec.vocabSize})` };
    const l = s.labels[i];
    if (l !== IGNORE_INDEX && (l < 0 || l >= spec.vocabSize)) return { bad: `${at}: label ${l} at position ${i} is outside the vocabulary [0, ${spec.vocabSize}) and not ${IGNORE_INDEX}` };
  }
  return s;
}
