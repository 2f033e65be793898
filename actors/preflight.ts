// What is checked on the coordinator before anything starts (no nats-server, no worker): the
// model folder, the data, the tokenizer the data needs, the fields we do not act on. Each problem
// is one line naming the field and what to do, so a run fails in a second rather than as
// "rank N failed" after every worker has started and loaded.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { supportProblems, type Config } from "../configs/index.ts";
import { peekData, resolveTokenizer } from "../data/index.ts";
import { readConfigJson, resolveConfig } from "../models/index.ts";

export interface PreflightResult {
  /** refusals: the run must not start. */
  problems: string[];
  /** said once at start; the run goes on. */
  warnings: string[];
}

const msg = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0];

/** The folder's config.json parses and names a supported model_type; null or the problem. */
function checkModelConfig(path: string, field: string): string | null {
  try {
    resolveConfig(readConfigJson(path), path);
    return null;
  } catch (e) {
    return `${field}: ${msg(e)}`;
  }
}

/** model.model_path: a Hugging Face folder with config.json and safetensors weights. */
export function checkModelFolder(dir: string, field = "model.model_path"): string[] {
  const abs = resolve(dir);
  const what = "expected a Hugging Face model folder with config.json and *.safetensors";
  if (!existsSync(abs)) return [`${field}: ${dir} does not exist (${what}; download it first, or give model.config_path for a randomly initialised model)`];
  if (!statSync(abs).isDirectory()) return [`${field}: ${dir} is not a folder (${what})`];
  if (!existsSync(join(abs, "config.json"))) return [`${field}: ${dir} has no config.json (${what})`];
  const bad = checkModelConfig(join(abs, "config.json"), field);
  if (bad) return [bad];
  if (!readdirSync(abs).some((f) => f.endsWith(".safetensors") || f === "model.safetensors.index.json"))
    return [`${field}: ${dir} has no *.safetensors weights (${what}; .bin/.pt weights are not read: convert them to safetensors)`];
  return [];
}

/**
 * The tokenizer folder the data loader uses: model.tokenizer_path if given, else model.model_path
 * when it holds a tokenizer.json, else none (enough for pre-tokenized data).
 */
export function tokenizerSource(c: Config): string | null {
  if (c.model.tokenizer_path) return c.model.tokenizer_path;
  const mp = c.model.model_path;
  return mp && existsSync(join(mp, "tokenizer.json")) ? mp : null;
}

/** Checks for `bun run coordinator` (training). */
export async function preflightTrain(c: Config): Promise<PreflightResult> {
  const problems: string[] = [];
  const { refused, warned } = supportProblems(c);
  problems.push(...refused.map((r) => `${r} (refused: the run would not do what it says)`));

  if (c.model.model_path) problems.push(...checkModelFolder(c.model.model_path));
  else if (c.model.config_path) {
    const p = c.model.config_path.endsWith(".json") ? c.model.config_path : join(c.model.config_path, "config.json");
    if (!existsSync(p)) problems.push(`model.config_path: ${c.model.config_path} does not exist (expected a config.json, or a folder holding one)`);
    else {
      const bad = checkModelConfig(p, "model.config_path");
      if (bad) problems.push(bad);
    }
  }

  if (c.model.tokenizer_path) {
    try {
      resolveTokenizer(c.model.tokenizer_path);
    } catch (e) {
      problems.push(`model.tokenizer_path: ${msg(e)}`);
    }
  }
  if (c.data.train_path) {
    try {
      const peek = await peekData(c.data.train_path, c.data.data_type, c.data.text_keys);
      if (peek.kind === "text" && tokenizerSource(c) === null) {
        problems.push(
          `model.tokenizer_path: data.train_path holds text (${peek.where}) and needs a tokenizer: ` +
            (c.model.model_path ? `model.model_path ${c.model.model_path} has no tokenizer.json; ` : "") +
            "set model.tokenizer_path to a folder with tokenizer.json (or qwen3, llama3), or train on pre-tokenized input_ids rows",
        );
      }
    } catch (e) {
      const m = msg(e);
      problems.push(m.startsWith("data.train_path") ? m : `data.train_path: ${m}`);
    }
  }
  return { problems, warnings: warned };
}
