// Fast exact byte-level BPE (GPT-2 / Llama-3 / Qwen family) for Hugging Face `tokenizer.json`.
// Why our own: @huggingface/tokenizers is exact but ~2.3x slower than the Rust core here; this
// path works on token ids instead of strings and caches each pre-token's ids, which brings it
// level with the Rust `tokenizers` package. It accepts only the shapes it reproduces exactly
// (checked by `byteLevelSupport`); anything else goes to @huggingface/tokenizers (tokenizer.ts).

/** GPT-2's bytes_to_unicode: byte (0..255) -> the printable char that stands for it in the vocab. */
export function bytesToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = keep.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  }
  return out;
}

// The GPT-2 pattern that ByteLevel(use_regex: true) applies.
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Oniguruma pattern (as in tokenizer.json) -> JS RegExp with the same matches for the
 *  constructs these tokenizers use: `(?i:...)` over ASCII letters, `\s`/`\S` as Unicode
 *  White_Space (JS's `\s` also matches U+FEFF and misses U+0085, Oniguruma's does the opposite). */
export function translatePattern(src: string): RegExp {
  let out = "";
  for (let i = 0; i < src.length; i++) {
    if (src.startsWith("(?i:", i)) {
      // case-insensitive group without classes: letters become [xX]
      let depth = 1, j = i + 4, body = "";
      for (; j < src.length && depth > 0; j++) {
        const c = src[j];
        if (c === "\\") { body += c + src[++j]; continue; }
        if (c === "(") depth++;
        if (c === ")" && --depth === 0) break;
        if (c === "[") throw new Error(`pre-tokenizer pattern: character class inside (?i:...) not supported: ${src}`);
        body += /[a-zA-Z]/.test(c) ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c;
      }
      out += `(?:${body})`;
      i = j;
      continue;
    }
    const c = src[i];
    if (c === "\\") {
      const d = src[++i];
      if (d === "s") out += "\\p{White_Space}";
      else if (d === "S") out += "\\P{White_Space}";
      else out += "\\" + d;
      continue;
    }
    out += c;
  }
  return new RegExp(out, "gu");
}

interface TokJson {
  normalizer: { type: string } | null;
  pre_tokenizer: any;
  model: { type: string; vocab: Record<string, number>; merges: (string | [string, string])[];
    dropout?: number | null; continuing_subword_prefix?: string | null; end_of_word_suffix?: string | null;
    byte_fallback?: boolean; ignore_merges?: boolean; unk_token?: string | null };
}

/** The pre-tokenizer regex if tokenizer.json is a shape this module reproduces exactly, else a reason. */
export function byteLevelSupport(tj: TokJson): { pattern: RegExp } | { reason: string } {
  const m = tj.model;
  if (m?.type !== "BPE") return { reason: `model.type ${m?.type}` };
  if (m.dropout || m.continuing_subword_prefix || m.end_of_word_suffix || m.byte_fallback) return { reason: "BPE options" };
  if (tj.normalizer && tj.normalizer.type !== "NFC") return { reason: `normalizer ${tj.normalizer.type}` };
  const pt = tj.pre_tokenizer;
  const isBL = (p: any) => p?.type === "ByteLevel" && !p.add_prefix_space;
  if (isBL(pt) && pt.use_regex) return { pattern: translatePattern(GPT2_PATTERN) };
  if (pt?.type === "Sequence" && pt.pretokenizers.length === 2) {
    const [split, bl] = pt.pretokenizers;
    if (split.type === "Split" && split.behavior === "Isolated" && !split.invert && split.pattern?.Regex && isBL(bl) && !bl.use_regex) {
      return { pattern: translatePattern(split.pattern.Regex) };
    }
  }
  return { reason: `pre_tokenizer ${JSON.stringify(pt).slice(0, 120)}` };
}

const SHIFT = 1 << 20; // ids and ranks < 2^20, so pair keys (a*2^20+b) stay exact in a double

/** BPE over byte ids with a per-pre-token cache. Does not handle added tokens or normalisation. */
export class ByteLevelBpe {
  private byteId = new Int32Array(256);
  private merges = new Map<number, number>(); // (a*2^20+b) -> rank*2^20 + mergedId
  private cache = new Map<string, number[]>();
  private scratch = new Uint8Array(4096);
  private enc = new TextEncoder();

  constructor(tj: TokJson, private pattern: RegExp) {
    const vocab = tj.model.vocab;
    const b2u = bytesToUnicode();
    for (let b = 0; b < 256; b++) {
      const id = vocab[b2u[b]];
      if (id === undefined) throw new Error(`tokenizer.json: byte-level vocab lacks byte ${b} ('${b2u[b]}')`);
      this.byteId[b] = id;
    }
    tj.model.merges.forEach((mg, rank) => {
      const [a, b] = typeof mg === "string" ? splitMerge(mg) : mg;
      const ia = vocab[a], ib = vocab[b], im = vocab[a + b];
      if (ia === undefined || ib === undefined || im === undefined) return; // HF skips these too
      const key = ia * SHIFT + ib;
      if (!this.merges.has(key)) this.merges.set(key, rank * SHIFT + im);
    });
    this.ignoreMerges = !!tj.model.ignore_merges;
    this.vocab = vocab;
  }
  private ignoreMerges: boolean;
  private vocab: Record<string, number>;
  private b2u = bytesToUnicode();

  /** Appends the ids of `text` (already normalised, no added tokens inside) to `out`. */
  encodeInto(text: string, out: number[]): void {
    this.pattern.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = this.pattern.exec(text)) !== null) {
      const w = m[0];
      if (w.length === 0) { this.pattern.lastIndex++; continue; }
      let ids = this.cache.get(w);
      if (ids === undefined) {
        ids = this.word(w);
        if (this.cache.size > 500_000) this.cache.clear(); // bound memory on odd corpora
        this.cache.set(w, ids);
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    }
  }

  // One pre-token -> ids: UTF-8 bytes -> byte ids -> apply merges lowest rank first.
  private word(w: string): number[] {
    if (this.scratch.length < w.length * 3) this.scratch = new Uint8Array(w.length * 3);
    const n = this.enc.encodeInto(w, this.scratch).written;
    if (this.ignoreMerges) {
      let s = "";
      for (let i = 0; i < n; i++) s += this.b2u[this.scratch[i]];
      const id = this.vocab[s];
      if (id !== undefined) return [id];
    }
    const ids: number[] = new Array(n);
    for (let i = 0; i < n; i++) ids[i] = this.byteId[this.scratch[i]];
    // O(n^2) in the pre-token length; pre-tokens are short and cached.
    while (ids.length > 1) {
      let best = Infinity, at = -1;
      for (let i = 0; i + 1 < ids.length; i++) {
        const v = this.merges.get(ids[i] * SHIFT + ids[i + 1]);
        if (v !== undefined && v < best) { best = v; at = i; }
      }
      if (at < 0) break;
      const merged = best % SHIFT;
      const a = ids[at], b = ids[at + 1];
      // merge every occurrence of (a,b) left to right (same result as HF's queue: a merge that
      // uses the new token always has a larger rank)
      const next: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) { next.push(merged); i++; }
        else next.push(ids[i]);
      }
      ids.length = 0;
      for (const x of next) ids.push(x);
    }
    return ids;
  }
}

function splitMerge(s: string): [string, string] {
  const k = s.indexOf(" ", 1);
  return [s.slice(0, k), s.slice(k + 1)];
}
