// Shared helpers for test/data: temp folders with real files, and loader configs.
import { writeFileSync } from "node:fs";
import { parquetWriteBuffer } from "hyparquet-writer";
import type { DataLoaderConfig } from "../../data/index.ts";


/** jsonl of pre-tokenized samples: sample k has length 1 + (k*7 % maxLen) and every id = k + 1,
 *  so any packed token tells which sample it came from. */
export function writeIdJsonl(file: string, n: number, maxLen: number, from = 0): void {
  const lines: string[] = [];
  for (let k = from; k < from + n; k++) lines.push(JSON.stringify({ input_ids: Array(1 + ((k * 7) % maxLen)).fill(k + 1) }));
  writeFileSync(file, lines.join("\n") + "\n");
}

export function writeParquet(file: string, columns: { name: string; data: unknown[]; type: string }[], codec: "SNAPPY" | "ZSTD", rowGroupSize: number): void {
  const buf = parquetWriteBuffer({
    columnData: columns as any, codec, rowGroupSize,
    compressors: { ZSTD: (b: Uint8Array) => Bun.zstdCompressSync(b) },
  } as any);
  writeFileSync(file, new Uint8Array(buf));
}

export function cfg(trainPath: string, o: {
  dataType?: "plaintext" | "conversation"; maxSeqLen?: number; mbs?: number; gbs?: number | null; epochs?: number;
  dyn?: boolean; buffer?: number; seed?: number; maxSteps?: number | null; onBad?: "error" | "skip"; textKeys?: string | null;
  chatTemplate?: string; warmup?: number; warmInit?: number;
} = {}): DataLoaderConfig {
  return {
    data: { train_path: trainPath, data_type: o.dataType ?? "plaintext", text_keys: o.textKeys ?? null, chat_template: o.chatTemplate ?? "default",
      max_seq_len: o.maxSeqLen ?? 16, train_size: 10_000_000, on_bad_sample: o.onBad ?? "error" },
    train: { micro_batch_size: o.mbs ?? 2, global_batch_size: o.gbs ?? null, num_train_epochs: o.epochs ?? 1, dyn_bsz: o.dyn ?? true,
      dyn_bsz_margin: 0, dyn_bsz_buffer_size: o.buffer ?? 8, bsz_warmup_ratio: o.warmup ?? 0, bsz_warmup_init_mbtoken: o.warmInit ?? 200,
      seed: o.seed ?? 42, max_steps: o.maxSteps ?? null },
  };
}

/** The sample ids (id - 1 of each sample's first token) in a micro-batch, in order. */
export function sampleIds(mb: { inputIds: Int32Array; cuSeqlens: Int32Array }): number[] {
  const out: number[] = [];
  for (let s = 0; s + 1 < mb.cuSeqlens.length; s++) out.push(mb.inputIds[mb.cuSeqlens[s]] - 1);
  return out;
}
