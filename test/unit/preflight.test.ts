// What a user meets before any work starts: each refused input is one line naming the field, from
// the real `bun run coordinator` entry point, and nothing (no output folder, no nats-server) is
// started. Also: human bounds, the table of fields we do not act on, --help and --print-config.
import { beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigSchema, loadConfig } from "../../configs/index.ts";
import { SUPPORT, supportProblems } from "../../configs/support.ts";
import { preflightTrain } from "../../actors/preflight.ts";
import { tempDir } from "../harness/tmp.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const dir = tempDir("preflight");
const QUICK = join(ROOT, "configs/quickstart.yaml");
const TINY = join(ROOT, "test/fixtures/qwen2-tiny"); // config.json + model.safetensors, no tokenizer

async function run(script: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([process.execPath, join(ROOT, script), ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, VEOMNI_NATS_TOKEN: "" } });
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code, out, err };
}

/** Runs the coordinator expecting a refusal: exit 2, one-line messages, no stack trace, nothing created.
 *  A test with several refusals starts them at once (each process mostly loads modules). */
async function refused(args: string[]): Promise<string> {
  const out = join(dir, `out-${Math.random().toString(36).slice(2)}`);
  const r = await run("actors/coordinator_main.ts", ["--config", QUICK, "--train.output_dir", out, ...args]);
  expect(r.code).toBe(2);
  expect(r.err).not.toMatch(/\n\s+at /); // no stack frames
  expect(r.err).not.toContain("step -1");
  expect(existsSync(out)).toBe(false); // nothing started: no veomni_cli.yaml, no .nats, no logs
  return r.err;
}

const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe("refused before anything starts, naming the field", () => {
  test("VeOmni's README command with no model folder and no data", async () => {
    const err = await refused(["--model.model_path", join(dir, "Qwen2.5-7B"), "--data.train_path", join(dir, "fineweb/sample/10BT/"), "--train.ulysses_parallel_size", "1"]);
    expect(err).toContain("model.model_path: ");
    expect(err).toContain("Qwen2.5-7B does not exist");
    expect(err).toContain("data.train_path: ");
    expect(err).toContain("nothing was started");
  }, 60_000);

  test("a model_path without config.json, and one without weights", async () => {
    const empty = join(dir, "empty-model");
    mkdirSync(empty, { recursive: true });
    const noWeights = join(dir, "no-weights");
    mkdirSync(noWeights, { recursive: true });
    copyFileSync(join(TINY, "config.json"), join(noWeights, "config.json"));
    const [a, b] = await Promise.all([refused(["--model.model_path", empty]), refused(["--model.model_path", noWeights])]);
    expect(a).toContain(`model.model_path: ${empty} has no config.json`);
    expect(b).toContain(`model.model_path: ${noWeights} has no *.safetensors weights`);
  }, 60_000);

  test("an unsupported model_type in config.json", async () => {
    const p = file("bert.json", JSON.stringify({ model_type: "bert" }));
    expect(await refused(["--model.config_path", p])).toMatch(/model\.config_path: .*model_type "bert" is not supported/);
  }, 60_000);

  test("a missing or empty data.train_path", async () => {
    const empty = file("empty.jsonl", "");
    const [a, b] = await Promise.all([refused(["--data.train_path", join(dir, "nope.jsonl")]), refused(["--data.train_path", empty])]);
    expect(a).toContain("data.train_path: ");
    expect(b).toMatch(/data\.train_path .*empty/);
  }, 60_000);

  test("text data without a tokenizer names model.tokenizer_path", async () => {
    const text = file("text.jsonl", '{"text": "hello world"}\n');
    const [err, noTok] = await Promise.all([
      refused(["--model.config_path", "null", "--model.model_path", TINY, "--model.tokenizer_path", "null", "--data.train_path", text]),
      refused(["--model.tokenizer_path", join(dir, "no-tok")]),
    ]);
    expect(err).toContain("model.tokenizer_path: data.train_path holds text");
    expect(err).toContain(`model.model_path ${TINY} has no tokenizer.json`);
    expect(noTok).toContain("model.tokenizer_path: ");
  }, 60_000);

  test("an unsupported parallel size and an unimplemented field", async () => {
    const [tp, offload] = await Promise.all([refused(["--train.tensor_parallel_size", "2", "--launch.world_size", "2"]), refused(["--train.enable_activation_offload", "true"])]);
    expect(tp).toContain("train.tensor_parallel_size = 2: not implemented yet");
    expect(offload).toContain("train.enable_activation_offload = true");
  }, 60_000);

  test("bounds read as humans write them", async () => {
    const [lr, seq, warm] = await Promise.all([refused(["--train.lr", "-0.001"]), refused(["--data.max_seq_len", "1.5"]), refused(["--train.lr_warmup_ratio", "2"])]);
    expect(lr).toContain("train.lr must be > 0, got -0.001");
    expect(seq).toContain("data.max_seq_len must be an integer, got 1.5");
    expect(warm).toContain("train.lr_warmup_ratio must be <= 1, got 2");
  }, 60_000);

  test("an unreachable NATS URL is one line naming --launch.nats", async () => {
    // a port nothing listens on: bind one, note it, close it
    const srv = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = srv.port;
    srv.stop(true);
    const err = await refused(["--launch.nats", `nats://127.0.0.1:${port}`, "--launch.local_workers", "1"]);
    expect(err).toContain(`--launch.nats: cannot reach NATS at nats://127.0.0.1:${port} (connection refused)`);
  }, 60_000);
});

describe("pre-tokenized data needs no tokenizer", () => {
  test("a model folder without tokenizer.json passes with input_ids rows", async () => {
    const rows = file("tok.jsonl", Array.from({ length: 8 }, (_, i) => JSON.stringify({ input_ids: [1, 2, 3, i + 4] })).join("\n") + "\n");
    const { config } = loadConfig(["--config", QUICK, "--model.config_path", "null", "--model.model_path", TINY, "--model.tokenizer_path", "null", "--data.train_path", rows, "--train.output_dir", join(dir, "o")]);
    expect(await preflightTrain(config)).toEqual({ problems: [], warnings: [] });
  }, 60_000);
});

describe("fields the schema accepts but we do not act on", () => {
  test("each table entry names a real field; defaults raise nothing but use_wandb", () => {
    const keys = new Set(Object.entries(ConfigSchema.shape).flatMap(([g, s]) => Object.keys((s as any).unwrap().shape).map((f) => `${g}.${f}`)));
    for (const r of SUPPORT) expect(keys.has(r.key)).toBe(true);
    const { refused: r, warned } = supportProblems(ConfigSchema.parse({}));
    expect(r).toEqual([]);
    expect(warned.map((w) => w.split(" =")[0])).toEqual(["train.use_wandb"]);
  }, 60_000);

  test("docs/config.md gives every field's effect", () => {
    const doc = readFileSync(join(ROOT, "docs/config.md"), "utf8");
    const missing = Object.entries(ConfigSchema.shape).flatMap(([g, s]) => Object.keys((s as any).unwrap().shape).map((f) => `${g}.${f}`)).filter((k) => !doc.includes(`| \`${k}\` |`));
    expect(missing).toEqual([]);
    for (const r of SUPPORT) expect(doc).toMatch(new RegExp(`\\| \`${r.key.replace(".", "\\.")}\` \\|[^\\n]*(Refused|refused|Warned|warned|said once)`));
  });

  test("a non-default value is warned once, naming the field and why; the run goes on", () => {
    const c = ConfigSchema.parse({ model: { attn_implementation: "eager" }, train: { use_wandb: false } });
    const { refused: r, warned } = supportProblems(c);
    expect(r).toEqual([]);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/^model\.attn_implementation = "eager": has no effect/);
  }, 60_000);

  test("use_wandb says there is no JavaScript client and points to TensorBoard and the plots", () => {
    const w = supportProblems(ConfigSchema.parse({ train: { use_wandb: true } })).warned.join("\n");
    expect(w).toContain("no Weights & Biases client for JavaScript");
    expect(w).toContain("tensorboard");
    expect(w).toContain("plots");
  }, 60_000);
});

describe("--help and --print-config", () => {
  const commands: Array<[string, string[]]> = [
    ["actors/coordinator_main.ts", []],
    ["actors/worker_main.ts", []],
    ["tools/merge.ts", []],
    ["tools/infer.ts", []],
    ["tools/jobs.ts", []],
    ["tools/data_sim.ts", []],
    ["tools/bench.ts", []],
    ["tools/bench.ts", ["train"]],
    ["tools/plot.ts", []],
  ];
  // the nine processes start at once (each mostly loads modules): one wait instead of nine in a row
  let helps: Array<Promise<{ code: number; out: string; err: string }>> = [];
  beforeAll(() => {
    helps = commands.map(([script, pre]) => run(script, [...pre, "--help"]));
  });
  commands.forEach(([script, pre], i) => {
    test(`${script} ${pre.join(" ")} --help prints usage and exits 0`, async () => {
      const r = await helps[i];
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^usage: /);
      expect(r.out).toContain("--");
      expect(r.err).toBe("");
    }, 60_000);
  });

  test("--print-config prints the resolved configuration with defaults", async () => {
    const r = await run("actors/coordinator_main.ts", ["--print-config", "--config", QUICK, "--train.lr", "0.003"]);
    expect(r.code).toBe(0);
    const c = ConfigSchema.parse({});
    expect(r.out).toContain("lr: 0.003");
    expect(r.out).toContain(`dyn_bsz_buffer_size: ${c.train.dyn_bsz_buffer_size}`);
  }, 60_000);

});
