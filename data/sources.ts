// Where samples come from: `data.train_path` (a file, a folder, or a comma-separated list of
// either) -> jsonl / parquet / txt files -> "units" that can be read one at a time with bounded
// memory. A unit is a block of <= UNIT_ROWS non-blank jsonl lines, a slice of a parquet row group,
// or one txt file (documents = paragraphs split at blank lines). The loader addresses every
// sample as (unit, row within unit), which is what makes shuffling and exact resume possible
// without holding the dataset in memory.
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync, fstatSync } from "node:fs";
import { extname, join, resolve } from "node:path";
import { parquetMetadata, parquetReadObjects, parquetSchema } from "hyparquet";
import { compressors } from "hyparquet-compressors";

export type FileKind = "jsonl" | "parquet" | "txt";
export const UNIT_ROWS = 1024;
const EXT: Record<string, FileKind> = { ".jsonl": "jsonl", ".parquet": "parquet", ".txt": "txt" };

export interface Unit {
  file: string;
  kind: FileKind;
  /** jsonl: byte range [start, end); parquet: row range [start, end); txt: unused (0, 0). */
  start: number;
  end: number;
  /** jsonl: 1-based line number at `start` (for error messages). */
  firstLine: number;
  /** Samples in this unit. */
  count: number;
}

/** One raw sample as read from a file, with where it came from ("f.jsonl line 12"). */
export interface RawRow {
  where: string;
  value: unknown;
  /** The data file (image paths in the row are relative to its folder). */
  file?: string;
}

/** Expands `data.train_path` into the sorted list of data files it names. */
export function expandTrainPath(trainPath: string, from = process.cwd()): string[] {
  const out: string[] = [];
  for (const part of trainPath.split(",").map((s) => s.trim()).filter(Boolean)) {
    const p = resolve(from, part);
    if (!existsSync(p)) throw new Error(`data.train_path: ${p} does not exist`);
    if (statSync(p).isDirectory()) {
      const found = walk(p).filter((f) => EXT[extname(f)]);
      if (found.length === 0) throw new Error(`data.train_path: folder ${p} holds no .jsonl, .parquet or .txt file`);
      out.push(...found);
    } else {
      if (!EXT[extname(p)]) throw new Error(`data.train_path: ${p}: expected a .jsonl, .parquet or .txt file`);
      out.push(p);
    }
  }
  if (out.length === 0) throw new Error(`data.train_path '${trainPath}' names no file`);
  return out;
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith(".")) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** Reads `fn(chunk, offset)` over a file in 1 MiB chunks (bounded memory). */
function scanFile(file: string, fn: (buf: Uint8Array, n: number, offset: number) => void): number {
  const fd = openSync(file, "r");
  try {
    const buf = new Uint8Array(1 << 20);
    let off = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, off);
      if (n <= 0) break;
      fn(buf, n, off);
      off += n;
    }
    return off;
  } finally { closeSync(fd); }
}

function readRange(file: string, start: number, end: number): Uint8Array {
  const fd = openSync(file, "r");
  try {
    const buf = new Uint8Array(end - start);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, start + got);
      if (n <= 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally { closeSync(fd); }
}

/** jsonl -> units of <= UNIT_ROWS non-blank lines. One pass, only newline positions are kept. */
function indexJsonl(file: string): Unit[] {
  const units: Unit[] = [];
  let unitStart = 0, unitLine = 1, count = 0, line = 1, lineStart = 0, blank = true;
  const endLine = (endByte: number) => {
    if (!blank) count++;
    line++; lineStart = endByte; blank = true;
    if (count === UNIT_ROWS) {
      units.push({ file, kind: "jsonl", start: unitStart, end: endByte, firstLine: unitLine, count });
      unitStart = endByte; unitLine = line; count = 0;
    }
  };
  const size = scanFile(file, (buf, n, off) => {
    for (let i = 0; i < n; i++) {
      const c = buf[i];
      if (c === 10) endLine(off + i + 1);
      else if (blank && c !== 32 && c !== 9 && c !== 13) blank = false;
    }
  });
  if (lineStart < size) endLine(size);
  if (count > 0) units.push({ file, kind: "jsonl", start: unitStart, end: size, firstLine: unitLine, count });
  return units;
}

// Text must be valid UTF-8: a lenient decoder would turn bad bytes into U+FFFD and train on them.
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** Splits bytes at "\n" and decodes each line strictly: text null (and the bad byte) for a line that is not UTF-8. */
function utf8Lines(bytes: Uint8Array): { text: string | null; badAt: number }[] {
  const out: { text: string | null; badAt: number }[] = [];
  for (let start = 0; start <= bytes.length; ) {
    let end = bytes.indexOf(10, start);
    if (end < 0) end = bytes.length;
    const line = bytes.subarray(start, end);
    try {
      out.push({ text: UTF8.decode(line), badAt: -1 });
    } catch {
      out.push({ text: null, badAt: firstInvalidUtf8(line) });
    }
    start = end + 1;
  }
  return out;
}

/** Byte offset of the first byte that does not start a valid UTF-8 sequence (for the message). */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    const n = c < 0x80 ? 1 : c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xf0 && c < 0xf5 ? 4 : 0;
    if (n === 0 || i + n > b.length) return i;
    try {
      UTF8.decode(b.subarray(i, i + n));
    } catch {
      return i;
    }
    i += n;
  }
  return b.length;
}

function readJsonl(u: Unit): RawRow[] {
  const rows: RawRow[] = [];
  const lines = utf8Lines(readRange(u.file, u.start, u.end));
  for (let i = 0; i < lines.length; i++) {
    const { text: l, badAt } = lines[i];
    const where = `${u.file} line ${u.firstLine + i}`;
    if (l === null) {
      rows.push({ where, value: new BadRow(`${where}: invalid UTF-8 at byte ${badAt} of the line`), file: u.file });
      continue;
    }
    if (l.trim() === "") continue;
    let value: unknown;
    try { value = JSON.parse(l); } catch (e) {
      value = new BadRow(`${where}: invalid JSON (${(e as Error).message})`);
    }
    rows.push({ where, value, file: u.file });
  }
  return rows;
}

/** A row that could not be parsed; samples.ts turns it into an error or a counted skip. */
export class BadRow {
  constructor(public readonly message: string) {}
}

/** txt: documents are paragraphs separated by blank lines, trimmed, empty ones dropped. */
export function splitParagraphs(text: string): string[] {
  return text.split(/\r?\n[ \t]*\r?\n/).map((p) => p.trim()).filter((p) => p.length > 0);
}

/** txt documents with where they start; a paragraph holding a line that is not UTF-8 is a BadRow. */
function readTxtDocs(file: string): RawRow[] {
  const lines = utf8Lines(readRange(file, 0, statSync(file).size));
  const rows: RawRow[] = [];
  let para: string[] = [];
  let first = 0;
  let bad: { line: number; at: number } | null = null;
  const end = () => {
    const text = para.join("\n").trim();
    const n = rows.length + 1;
    if (bad) rows.push({ where: `${file} line ${first} (paragraph ${n})`, value: new BadRow(`${file} line ${bad.line}: invalid UTF-8 at byte ${bad.at} of the line (paragraph ${n})`), file });
    else if (text.length > 0) rows.push({ where: `${file} line ${first} (paragraph ${n})`, value: text, file });
    para = [];
    bad = null;
  };
  lines.forEach(({ text, badAt }, i) => {
    // a blank line (only spaces or tabs) ends a paragraph, as splitParagraphs
    if (text !== null && /^[ \t]*\r?$/.test(text)) return end();
    if (para.length === 0 && !bad) first = i + 1;
    if (text === null) bad ??= { line: i + 1, at: badAt };
    else para.push(text);
  });
  end();
  return rows;
}

// hyparquet reads a file through this: positioned reads of exactly the bytes it asks for.
function fileBuffer(file: string) {
  const fd = openSync(file, "r");
  const byteLength = fstatSync(fd).size;
  return {
    byteLength,
    slice(start: number, end?: number): ArrayBuffer {
      const e = end ?? byteLength;
      const buf = new Uint8Array(e - start);
      let got = 0;
      while (got < buf.length) { const n = readSync(fd, buf, got, buf.length - got, start + got); if (n <= 0) break; got += n; }
      return buf.buffer;
    },
    close: () => closeSync(fd),
  };
}

/** Reads only the footer: row groups -> units. Also checks that a wanted column exists; the
 *  first of `imageKeys` present is read too. */
function indexParquet(file: string, keys: string[], imageKeys: string[]): { units: Unit[]; columns: string[]; imageColumn: string | null } {
  const fb = fileBuffer(file);
  try {
    if (fb.byteLength < 12) throw new Error(`${file}: not a parquet file (${fb.byteLength} bytes)`);
    const tail = new DataView(fb.slice(fb.byteLength - 8));
    const metaLen = tail.getUint32(0, true);
    const meta = parquetMetadata(fb.slice(Math.max(0, fb.byteLength - 8 - metaLen)));
    const columns = parquetSchema(meta).children.map((c) => c.element.name);
    // pre-tokenized files carry input_ids (+ labels) instead of text
    const used = columns.includes("input_ids") ? columns.filter((c) => c === "input_ids" || c === "labels") : keys.filter((k) => columns.includes(k));
    if (used.length === 0) throw new Error(`${file}: no column named ${keys.map((k) => `'${k}'`).join(" or ")} (data.text_keys) or 'input_ids'; columns: ${columns.join(", ")}`);
    const img = imageKeys.find((k) => columns.includes(k));
    const units: Unit[] = [];
    let row = 0;
    for (const rg of meta.row_groups) {
      const n = Number(rg.num_rows);
      for (let s = 0; s < n; s += UNIT_ROWS) {
        const c = Math.min(UNIT_ROWS, n - s);
        units.push({ file, kind: "parquet", start: row + s, end: row + s + c, firstLine: 0, count: c });
      }
      row += n;
    }
    return { units, columns: used, imageColumn: img ?? null };
  } finally { fb.close(); }
}

async function readParquet(u: Unit, columns: string[], imageColumn: string | null): Promise<RawRow[]> {
  const fb = fileBuffer(u.file);
  try {
    const objs = await parquetReadObjects({ file: fb, columns, rowStart: u.start, rowEnd: u.end, compressors });
    if (imageColumn) {
      // image bytes: binary without a string annotation stays bytes (utf8: false), read on its own
      // so text columns keep hyparquet's default decoding
      const imgs = await parquetReadObjects({ file: fb, columns: [imageColumn], rowStart: u.start, rowEnd: u.end, compressors, utf8: false } as any);
      objs.forEach((o, i) => { o[imageColumn] = imgs[i][imageColumn]; });
    }
    return objs.map((value, i) => ({ where: `${u.file} row ${u.start + i}`, value, file: u.file }));
  } finally { fb.close(); }
}

export interface SourceIndex {
  units: Unit[];
  /** Total samples over all units. */
  total: number;
  /** parquet file -> the columns to read from it. */
  parquetColumns: Map<string, string[]>;
  /** parquet file -> its image column (the first of data.image_keys present), if any. */
  parquetImages: Map<string, string | null>;
  /** Files that had no sample at all (only when empty files are skipped). */
  emptyFiles: string[];
}

/** Indexes every file: counts samples per unit. An empty file is an error unless `skipEmpty`. */
export function indexSources(files: string[], keys: string[], skipEmpty: boolean, imageKeys: string[] = []): SourceIndex {
  const units: Unit[] = [];
  const parquetColumns = new Map<string, string[]>();
  const parquetImages = new Map<string, string | null>();
  const emptyFiles: string[] = [];
  for (const file of files) {
    let us: Unit[];
    const kind = EXT[extname(file)];
    if (kind === "jsonl") us = indexJsonl(file);
    else if (kind === "parquet") {
      const r = indexParquet(file, keys, imageKeys);
      parquetColumns.set(file, r.columns);
      parquetImages.set(file, r.imageColumn);
      us = r.units;
    } else {
      const n = readTxtDocs(file).length; // documents, the ones that are not UTF-8 included (bad samples)
      us = n ? [{ file, kind: "txt", start: 0, end: 0, firstLine: 0, count: n }] : [];
    }
    if (us.length === 0) {
      if (!skipEmpty) throw new Error(`${file}: empty file (no sample in it)`);
      emptyFiles.push(file);
    }
    units.push(...us);
  }
  return { units, total: units.reduce((s, u) => s + u.count, 0), parquetColumns, parquetImages, emptyFiles };
}

/** All rows of one unit in file order. */
export async function readUnit(idx: SourceIndex, u: Unit): Promise<RawRow[]> {
  switch (u.kind) {
    case "jsonl": return readJsonl(u);
    case "parquet": return readParquet(u, idx.parquetColumns.get(u.file)!, idx.parquetImages.get(u.file) ?? null);
    case "txt": return readTxtDocs(u.file);
  }
}
