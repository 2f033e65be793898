// What kind of samples a data path holds, from its first row: pre-tokenized rows (`input_ids`)
// need no tokenizer, text rows do. Read at start, before any process is launched, so a missing
// tokenizer is named then and not by a rank halfway through its first step.
import { statSync } from "node:fs";
import { defaultKeys } from "./samples.ts";
import { expandTrainPath, indexSources, readUnit } from "./sources.ts";

export interface DataPeek {
  files: string[];
  /** "tokens": the first row has input_ids; "text": it has text or a conversation. */
  kind: "tokens" | "text";
  /** where the first row is ("f.jsonl line 1"). */
  where: string;
}

/** Expands `trainPath` (errors name data.train_path) and reads the first row of its first non-empty file. */
export async function peekData(trainPath: string, dataType: "plaintext" | "conversation", textKeys: string | null | undefined, from?: string): Promise<DataPeek> {
  const files = expandTrainPath(trainPath, from);
  const keys = defaultKeys(dataType, textKeys);
  for (const file of files) {
    if (statSync(file).size === 0) continue;
    const idx = indexSources([file], keys, true);
    const unit = idx.units[0];
    if (!unit) continue;
    const row = (await readUnit(idx, unit))[0];
    if (!row) continue;
    const v = row.value;
    const tokens = v !== null && typeof v === "object" && !Array.isArray(v) && "input_ids" in v;
    return { files, kind: tokens ? "tokens" : "text", where: row.where };
  }
  throw new Error(`data.train_path '${trainPath}': ${files.length === 1 ? files[0] : `all ${files.length} files`} ${files.length === 1 ? "is" : "are"} empty (no sample)`);
}
