// `bun run coordinator --config x.yaml [--group.field value ...]`: validates the whole
// configuration before anything starts, writes output_dir/veomni_cli.yaml, then runs the job.
import { ConfigError, loadConfig, makeLogger, writeResolvedConfig } from "../configs/index.ts";
import { runLocalTraining } from "./local.ts";

async function main(argv: string[]): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(argv, "train");
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`veomni-ts coordinator: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const { config, rest } = loaded;
  if (rest.length > 0) {
    console.error(`veomni-ts coordinator: unexpected argument(s) ${rest.join(" ")} (expected --config FILE and --group.field VALUE)`);
    return 2;
  }
  const outputDir = config.train.output_dir!;
  const resolved = writeResolvedConfig(config, outputDir);
  const log = makeLogger("coordinator", outputDir);
  log.info({ resolved }, "configuration resolved");
  // World size 1 with no NATS given trains in this process: nothing to coordinate.
  if (config.launch.world_size === 1 && config.launch.nats === null) {
    await runLocalTraining(config, log);
    return 0;
  }
  console.error("veomni-ts coordinator: multi-rank training is not available yet in this version (see README.md, Features).");
  return 2;
}

process.exitCode = await main(process.argv.slice(2));
