// Text that is not UTF-8, and empty text, are bad samples: an error naming the file and line, or
// with data.on_bad_sample: skip, counted and skipped. Never silently trained on as U+FFFD.
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createDataLoader } from "../../data/index.ts";
import { cfg } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

const opts = { dpRank: 0, dpSize: 1, vocabSize: 151936, tokenizerPath: "qwen3" };
const enc = new TextEncoder();
const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === "string" ? enc.encode(p) : Uint8Array.from(p))));

/** Reads the whole file through the loader: the first error, the steps and the samples skipped. */
async function read(file: string, onBad: "error" | "skip") {
  const l = createDataLoader(cfg(file, { onBad, mbs: 1, dyn: false, maxSeqLen: 32, seed: 1 }), opts);
  let steps = 0;
  try { while (await l.nextStep()) steps++; } catch (e) { return { error: (e as Error).message, steps, skipped: l.skipped }; }
  return { error: null, steps, skipped: l.skipped };
}

test("jsonl: a line with bytes that are not UTF-8 names file, line and byte; skip counts it", async () => {
  const dir = tempDir("utf8");
  const f = join(dir, "d.jsonl");
  // line 3: "caf\xe9" (Latin-1, not UTF-8) inside the JSON string
  writeFileSync(f, bytes('{"text": "one"}\n{"text": "two"}\n{"text": "caf', [0xe9], '"}\n{"text": "four"}\n'));
  const e = await read(f, "error");
  expect(e.error).toContain(`${f} line 3: invalid UTF-8 at byte 13 of the line`);
  const s = await read(f, "skip");
  expect(s).toEqual({ error: null, steps: 3, skipped: 1 });
}, 30_000);

test("jsonl: empty text and whitespace-only text are bad samples", async () => {
  const dir = tempDir("empty-text");
  const f = join(dir, "d.jsonl");
  writeFileSync(f, ['{"text": "one"}', '{"text": ""}', '{"text": "three"}', '{"text": " \\n\\t "}'].join("\n") + "\n");
  const e = await read(f, "error");
  // (shuffled: whichever comes first)
  expect(e.error).toMatch(new RegExp(`${f} line (2: column 'text': empty text \\(data|4: column 'text': empty text \\(only whitespace\\))`));
  const s = await read(f, "skip");
  expect(s).toEqual({ error: null, steps: 2, skipped: 2 });
}, 30_000);

test("txt: a paragraph with a line that is not UTF-8 names the file and that line; skip counts the paragraph", async () => {
  const dir = tempDir("utf8-txt");
  const f = join(dir, "d.txt");
  // paragraphs: lines 1-2, line 4, lines 6-7 (line 7 holds a lone continuation byte), line 9
  writeFileSync(f, bytes("first para\nstill first\n\nsecond\n  \nthird starts\nbad ", [0x80], " here\n\nfourth\n"));
  const e = await read(f, "error");
  expect(e.error).toContain(`${f} line 7: invalid UTF-8 at byte 4 of the line (paragraph 3)`);
  const s = await read(f, "skip");
  expect(s).toEqual({ error: null, steps: 3, skipped: 1 });
}, 30_000);
