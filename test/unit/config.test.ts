// Configuration: YAML + CLI overrides + zod validation + cross-field checks, with errors that
// name the file (line:col), the dotted key and what was expected.
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import yaml from "js-yaml";
import { ConfigError, loadConfig, splitArgs, writeResolvedConfig, ConfigSchema } from "../../configs/index.ts";
import { tempDir } from "../harness/tmp.ts";

const dir = tempDir("config");
const BASE = `model:
  config_path: m/config.json
data:
  train_path: d.jsonl
train:
  output_dir: out
  micro_batch_size: 2
  global_batch_size: 8
`;
function yamlFile(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError, got success");
}

describe("config from YAML", () => {
  test("defaults follow VeOmni v0.1", () => {
    const { config } = loadConfig(["--config", yamlFile("ok.yaml", BASE)]);
    expect(config.train.lr).toBe(5e-5);
    expect(config.train.data_parallel_mode).toBe("ddp");
    expect(config.data.max_seq_len).toBe(2048);
    expect(config.train.dyn_bsz_buffer_size).toBe(200);
    expect(config.infer.top_p).toBe(1.0);
    expect(config.train.global_batch_size).toBe(8);
  });

  test("unknown key names file, line:col and the closest valid key", () => {
    const p = yamlFile("typo.yaml", BASE + "  global_batchsize: 4\n");
    const msg = errorOf(() => loadConfig(["--config", p]));
    expect(msg).toContain(`${p}:9:3`);
    expect(msg).toContain("unknown key train.global_batchsize; did you mean train.global_batch_size?");
  });

  test("unknown group lists the valid groups", () => {
    const msg = errorOf(() => loadConfig(["--config", yamlFile("grp.yaml", BASE + "trian:\n  lr: 1\n")]));
    expect(msg).toContain("unknown group trian");
    expect(msg).toContain("model, data, train, infer, launch, kernels");
  });

  test("wrong type names the key, the expected type and the value", () => {
    const p = yamlFile("type.yaml", BASE.replace("micro_batch_size: 2", "micro_batch_size: two"));
    const msg = errorOf(() => loadConfig(["--config", p]));
    expect(msg).toContain(`${p}:7:3`);
    expect(msg).toContain('train.micro_batch_size: expected number, got "two"');
  });

  test("bad enum value lists the allowed values", () => {
    const msg = errorOf(() => loadConfig(["--config", yamlFile("enum.yaml", BASE + "  data_parallel_mode: zero3\n")]));
    expect(msg).toContain('train.data_parallel_mode: expected one of "ddp", "fsdp1", "fsdp2", "fsdp2-vescale", got "zero3"');
  });

  test("data.dataloader_type other than native (VeOmni's other loaders are not built) is refused, not ignored", () => {
    const msg = errorOf(() => loadConfig(["--config", yamlFile("loader.yaml", BASE), "--data.dataloader_type", "streaming"]));
    expect(msg).toContain('data.dataloader_type: expected one of "native", got "streaming"');
  });

  test("YAML syntax error gives file:line:col", () => {
    const p = yamlFile("syntax.yaml", "train:\n  lr: 1\n   bad: [1, 2\n");
    const msg = errorOf(() => loadConfig(["--config", p]));
    expect(msg).toMatch(new RegExp(`${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:3:\\d+: YAML syntax error`));
  });

  test("missing required fields are each named", () => {
    const msg = errorOf(() => loadConfig(["--config", yamlFile("empty.yaml", "train:\n  lr: 1.0e-3\n")]));
    expect(msg).toContain("missing required field data.train_path");
    expect(msg).toContain("missing required field train.output_dir");
    expect(msg).toContain("missing required field model.model_path or model.config_path");
    // inference needs only its own model path
    expect(errorOf(() => loadConfig([], "infer"))).toContain("missing required field infer.model_path");
  });

  test("a missing config file is named", () => {
    expect(errorOf(() => loadConfig(["--config", join(dir, "nope.yaml")]))).toContain("nope.yaml: cannot read the config file (ENOENT)");
  });

  test("all errors are reported together", () => {
    const p = yamlFile("many.yaml", BASE + "  lr: fast\n  bogus: 1\n");
    const e = (() => { try { loadConfig(["--config", p]); } catch (e) { return e as ConfigError; } })();
    expect(e?.problems.length).toBe(2);
  });
});

describe("command-line overrides", () => {
  const p = yamlFile("base.yaml", BASE);
  test("every field type parses from a string", () => {
    const { config } = loadConfig([
      "--config", p,
      "--train.lr", "1e-4", // number in exponent form
      "--train.max_steps=7", // = form, int
      "--train.dyn_bsz", "false", // boolean
      "--train.enable_full_shard=yes",
      "--data.text_keys", "content", // string
      "--train.lr_decay_style", "cosine", // enum
      "--model.basic_modules", "LlamaDecoderLayer,Qwen2DecoderLayer", // list of strings
      "--infer.input_ids", "1,42,99", // list of ints
      "--launch.port_range", "29500,29600", // tuple
      "--train.load_checkpoint_path", "null", // nullable
      "--model.encoders", "{image: {config_path: vit.json}}", // mapping
    ]);
    expect(config.train.lr).toBe(1e-4);
    expect(config.train.max_steps).toBe(7);
    expect(config.train.dyn_bsz).toBe(false);
    expect(config.train.enable_full_shard).toBe(true);
    expect(config.data.text_keys).toBe("content");
    expect(config.train.lr_decay_style).toBe("cosine");
    expect(config.model.basic_modules).toEqual(["LlamaDecoderLayer", "Qwen2DecoderLayer"]);
    expect(config.infer.input_ids).toEqual([1, 42, 99]);
    expect(config.launch.port_range).toEqual([29500, 29600]);
    expect(config.train.load_checkpoint_path).toBeNull();
    expect(config.model.encoders).toEqual({ image: { config_path: "vit.json" } });
  });

  test("overrides win over the YAML, the later flag over the earlier", () => {
    const { config } = loadConfig(["--config", p, "--train.micro_batch_size", "4", "--train.micro_batch_size", "1"]);
    expect(config.train.micro_batch_size).toBe(1);
  });

  test("bad override values name the flag", () => {
    expect(errorOf(() => loadConfig(["--config", p, "--train.lr", "abc"]))).toContain('--train.lr: expected a number, got "abc"');
    expect(errorOf(() => loadConfig(["--config", p, "--train.dyn_bsz", "maybe"]))).toContain("--train.dyn_bsz: expected a boolean");
    expect(errorOf(() => loadConfig(["--config", p, "--train.bogus", "1"]))).toContain("unknown key train.bogus");
    expect(errorOf(() => loadConfig(["--config", p, "--train.max_steps", "-3"]))).toContain("--train.max_steps -3: train.max_steps");
    expect(errorOf(() => loadConfig(["--config", p, "--train.lr"]))).toContain("--train.lr: expected a value");
  });

  test("other flags are passed through for the tool", () => {
    expect(splitArgs(["--load-dir", "x", "--train.lr=1", "pos"]).rest).toEqual(["--load-dir", "x", "pos"]);
  });
});

describe("cross-field checks", () => {
  const p = yamlFile("x.yaml", BASE);
  test("global batch must divide by micro batch x dp size", () => {
    const msg = errorOf(() => loadConfig(["--config", p, "--launch.world_size", "3"]));
    expect(msg).toContain("train.global_batch_size(8) is not divisible by train.micro_batch_size(2) * data-parallel size(3)");
  });
  test("parallel sizes must factor the world size, every factor named", () => {
    const msg = errorOf(() => loadConfig(["--config", p, "--launch.world_size", "6", "--train.ulysses_parallel_size", "4"]));
    expect(msg).toContain("train.pipeline_parallel_size(1) * train.tensor_parallel_size(1) * train.ulysses_parallel_size(4) * train.context_parallel_size(1) = 4 does not divide launch.world_size(6)");
  });
  test("lr_min above lr, replicate size, local workers", () => {
    const msg = errorOf(() =>
      loadConfig(["--config", p, "--train.lr", "1e-5", "--train.lr_min", "1e-4", "--launch.world_size", "4", "--train.data_parallel_replicate_size", "3", "--launch.local_workers", "5"]),
    );
    expect(msg).toContain("train.lr_min(0.0001) is above train.lr(0.00001)");
    expect(msg).toContain("train.data_parallel_replicate_size(3) does not divide the data-parallel size 4");
    expect(msg).toContain("launch.local_workers(5) is above launch.world_size(4)");
  });
});

test("the resolved config is written and reloads to the same values", () => {
  const { config } = loadConfig(["--config", yamlFile("r.yaml", BASE), "--train.lr", "2e-4"]);
  const path = writeResolvedConfig(config, join(dir, "out"));
  expect(path).toBe(join(dir, "out", "veomni_cli.yaml"));
  const back = ConfigSchema.parse(yaml.load(readFileSync(path, "utf8")));
  expect(back).toEqual(config);
});

test("every example config in configs/ validates", () => {
  for (const f of ["quickstart.yaml", "pretrain/qwen2_5.yaml", "pretrain/llama3.yaml", "sft/qwen2_5_sft.yaml", "sft/llama3_sft.yaml"]) {
    expect(() => loadConfig(["--config", join(import.meta.dir, "../../configs", f)])).not.toThrow();
  }
});

test("coordinator refuses an unknown override before starting anything", async () => {
  const root = join(import.meta.dir, "../..");
  const proc = Bun.spawn([process.execPath, "actors/coordinator_main.ts", "--config", "configs/quickstart.yaml", "--train.bogus", "1"], {
    cwd: root, stdout: "pipe", stderr: "pipe",
  });
  const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  expect(code).not.toBe(0);
  expect(err).toContain("train.bogus");
}, 30_000);
