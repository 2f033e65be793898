// A coordinator started as its own process, as a user would on a host: the config comes as
// JSON in argv[2] (already validated fields; the YAML front end is configs/, tested there),
// the step runner name in argv[3]. Exits with runJob's code.
import { ConfigSchema, makeLogger } from "../../configs/index.ts";
import { runJob } from "../../actors/coordinator.ts";

const config = ConfigSchema.parse(JSON.parse(process.argv[2]));
const logger = makeLogger("coordinator", config.train.output_dir);
process.exitCode = await runJob(config, logger, { runner: process.argv[3] ?? "toy" });
