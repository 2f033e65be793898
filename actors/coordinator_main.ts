// `bun run coordinator --config x.yaml [--group.field value ...]`: validates the whole
// configuration before anything starts, writes output_dir/veomni_cli.yaml, then runs the job.
import { ConfigError, loadConfig, makeLogger, writeResolvedConfig, type Logger } from "../configs/index.ts";
import { runJob } from "./coordinator.ts";

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
  let log: Logger | null = null;
  try {
    const resolved = writeResolvedConfig(config, outputDir);
    log = makeLogger("coordinator", outputDir);
    log.info({ resolved }, "configuration resolved");
    // Every job, world size 1 included, runs as coordinator + worker processes: the same path
    // (NATS job record, checkpoints, supervision) whatever the size.
    return await runJob(config, log);
  } catch (e) {
    // one line for the user (a full disk, an unreachable server); the stack only at debug level
    const err = e instanceof Error ? e : new Error(String(e));
    try {
      log?.debug({ stack: err.stack }, "coordinator failed");
    } catch {
      // the log file may be what failed (a full disk): the line below still says why
    }
    console.error(`veomni-ts coordinator: ${err.message}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
