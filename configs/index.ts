// Configuration: the public surface of configs/.
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import yaml from "js-yaml";
import type { Config } from "./schema.ts";

export { ConfigSchema, GROUPS } from "./schema.ts";
export type { Config, ModelArgs, DataArgs, TrainArgs, InferArgs, LaunchArgs, KernelsArgs, Group } from "./schema.ts";
export { loadConfig, splitArgs, ConfigError } from "./load.ts";
export { dataParallelSize, type Command } from "./checks.ts";
export { makeLogger, type Logger } from "./log.ts";
export { parallelRefusals, SUPPORT, supportProblems, type SupportRule } from "./support.ts";
export { fieldsHelp, configYaml } from "./help.ts";

/** Writes the resolved configuration (defaults filled in, overrides applied) to output_dir/veomni_cli.yaml. */
export function writeResolvedConfig(config: Config, outputDir: string): string {
  mkdirSync(outputDir, { recursive: true });
  const path = join(outputDir, "veomni_cli.yaml");
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, yaml.dump(config, { lineWidth: 120, noRefs: true }));
  renameSync(tmp, path);
  return path;
}
