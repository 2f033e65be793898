// output_dir/model_assets/: the model's config and tokenizer files, written once at the start of
// training, so a checkpoint can be merged into a self-contained Hugging Face folder later
// (merge.ts) even if the original model folder is gone.

import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { fsyncDir } from "./rank_writer.ts";

/** Files of a HF model folder that describe the model and its tokenizer (never weights). */
export const ASSET_FILES = [
  "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
  "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.json", "chat_template.jinja",
  "preprocessor_config.json",
];

export interface AssetSources {
  /** Folders to take asset files from, first match wins (model_path, tokenizer_path, config_path's folder). */
  dirs: (string | null | undefined)[];
  /** config.json contents when the model was built from a config, not a folder (overrides dirs). */
  configJson?: Record<string, unknown>;
}

/** Writes output_dir/model_assets atomically (temp folder, rename); returns the file names. */
export function writeModelAssets(outputDir: string, src: AssetSources): string[] {
  const dest = join(outputDir, "model_assets");
  const tmp = `${dest}.tmp-${process.pid}`;
  let current = tmp;
  const written: string[] = [];
  try {
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    for (const name of ASSET_FILES) {
      current = join(tmp, name);
      if (name === "config.json" && src.configJson) {
        writeDurable(current, JSON.stringify(src.configJson, null, 2) + "\n");
        written.push(name);
        continue;
      }
      const from = src.dirs.filter((d): d is string => !!d).map((d) => join(d, name)).find((p) => existsSync(p) && statSync(p).isFile());
      if (!from) continue;
      copyFileSync(from, current);
      fsyncFile(current);
      written.push(name);
    }
    if (!written.includes("config.json")) throw new Error(`model_assets: no config.json in ${src.dirs.filter(Boolean).join(", ") || "(no model folder given)"}`);
    current = tmp;
    fsyncDir(tmp);
    current = dest;
    replaceDir(tmp, dest);
  } catch (e) {
    // nothing half-written stays behind (a full disk: the next try starts from a clean folder)
    rmSync(tmp, { recursive: true, force: true });
    const err = e as NodeJS.ErrnoException;
    throw err.code ? new Error(`model_assets: writing ${current}: ${err.code}: ${err.message.replace(/^[A-Z]+: /, "")}`) : err;
  }
  return written;
}

export function writeDurable(path: string, text: string): void {
  const fd = openSync(path, "w");
  try {
    const b = new TextEncoder().encode(text);
    for (let at = 0; at < b.length; ) at += writeSync(fd, b, at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function fsyncFile(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Puts the complete folder `tmp` at `dest`, replacing an older one; the parent is fsynced. */
export function replaceDir(tmp: string, dest: string): void {
  const old = `${dest}.old-${process.pid}`;
  const had = existsSync(dest);
  if (had) renameSync(dest, old);
  renameSync(tmp, dest);
  fsyncDir(join(dest, ".."));
  if (had) rmSync(old, { recursive: true, force: true });
}

/** Lists a folder's plain files (for messages). */
export function listFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((n) => statSync(join(dir, n)).isFile()).sort() : [];
}
