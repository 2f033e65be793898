// `bun run coordinator --config x.yaml [--group.field value ...]`: validates the whole
// configuration and checks the model, data and tokenizer it names (actors/preflight.ts) before
// anything starts, writes output_dir/veomni_cli.yaml, then runs the job. Errors a user can fix
// are one line naming the field; a stack trace is only for our own bugs.
// `bun run coordinator --resume JOB [--launch.nats URL | --train.output_dir DIR] [...]` takes
// over a job whose coordinator died (resume.ts): its configuration comes from the job's record in
// KV (with launch.nats) or from DIR/veomni_cli.yaml (an embedded NATS died with its coordinator, or
// a new server holds no record), flags still override it; live ranks are adopted (adopt.ts), else
// they restart from the newest committed checkpoint. A job that is done or unknown is refused.
import { mkdtempSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { ConfigError, GROUPS, configYaml, fieldsHelp, loadConfig, makeLogger, splitArgs, writeResolvedConfig, type Config, type Logger } from "../configs/index.ts";
import { runJob } from "./coordinator.ts";
import { preflightTrain } from "./preflight.ts";
import { connectNats, keys, openBucket, readJson, withTimeout, type JobState } from "./nats.ts";
import { whyNotResumable } from "./resume.ts";
import { UserError, natsConnectError } from "./cli_errors.ts";
import { JOB_COPY, readJobCopy } from "./job_copy.ts";
import { join } from "node:path";

const HELP = `usage: bun run coordinator --config FILE [--group.field VALUE ...] [--print-config]
       bun run coordinator --resume JOB [--launch.nats URL | --train.output_dir DIR] [--group.field VALUE ...]

Trains the model the configuration names: starts an embedded nats-server (unless launch.nats is
set), launch.world_size local workers (launch.local_workers of them when NATS is external), and
runs train.max_steps (or the data's) optimizer steps. Everything is checked before anything starts.

  --config FILE        VeOmni-style YAML with the groups ${GROUPS.join(", ")}
  --group.field VALUE  override one field (also --group.field=VALUE), parsed to the field's type
  --print-config       print the resolved configuration (defaults filled in) and exit
  --resume JOB         take over job JOB after its coordinator died (or the job failed or stopped):
                       its configuration from its KV record (launch.nats) or OUTPUT_DIR/veomni_cli.yaml;
                       running workers are adopted, else the ranks restart under the next epoch from
                       the newest committed checkpoint; a job that is done or unknown is refused
                       (docs/deploy.md)
  --help               this text

Writes OUTPUT_DIR/metrics.jsonl, logs/, plots/, tensorboard/, veomni_cli.yaml and checkpoints/.
The NATS token of an external server: --launch.nats_token T or VEOMNI_NATS_TOKEN.
What each field does: docs/config.md. Fields:
`;

const say = (m: string) => console.error(`veomni-ts coordinator: ${m}`);

/** The configuration a job ran with: from its KV record or its output_dir, CLI flags on top. */
async function resumedConfig(job: string, argv: string[]): Promise<{ config: Config; rest: string[] }> {
  const flag = (key: string) => splitArgs(argv).overrides.findLast((o) => o.key === key)?.raw ?? null;
  const cli = { nats: flag("launch.nats"), token: flag("launch.nats_token"), dir: flag("train.output_dir") };
  if (cli.nats) {
    const nc = await connectNats({ url: cli.nats, token: cli.token ?? Bun.env.VEOMNI_NATS_TOKEN, name: "veomni-resume" });
    try {
      const stored = await withTimeout(readJson<Config>(await openBucket(nc), keys.config(job)), 10_000, `read ${keys.config(job)}`);
      // none: the server may have lost its store (a new one after a Slurm requeue): the output_dir's copy
      if (!stored && !cli.dir)
        throw new ConfigError([`--resume ${job}: no ${keys.config(job)} in KV bucket veomni_jobs at ${cli.nats}: expected the id of a job run on that server (bun run jobs --nats ${cli.nats} lists them), or give --train.output_dir DIR of a job whose server lost its store`]);
      if (stored) {
        const dir = mkdtempSync(join(tmpdir(), "veomni-resume-"));
        try {
          writeFileSync(join(dir, "config.yaml"), JSON.stringify(stored)); // JSON is YAML
          return loadConfig(["--config", join(dir, "config.yaml"), ...argv], "train");
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
    } finally {
      await nc.close();
    }
  }
  const dir = cli.dir;
  if (!dir) throw new ConfigError([`--resume ${job}: give --launch.nats URL (the job's record in KV) or --train.output_dir DIR (its veomni_cli.yaml)`]);
  const file = join(dir, "veomni_cli.yaml");
  if (!existsSync(file)) throw new ConfigError([`--resume ${job}: ${file} not found (the configuration the job ran with)`]);
  return loadConfig(["--config", file, ...argv], "train");
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(HELP + fieldsHelp());
    return 0;
  }
  const printConfig = argv.includes("--print-config");
  let loaded;
  let resume: string | null = null;
  try {
    if (printConfig) argv = argv.filter((a) => a !== "--print-config");
    const ri = argv.indexOf("--resume");
    if (ri >= 0) {
      resume = argv[ri + 1] ?? "";
      if (!/^[A-Za-z0-9_-]+$/.test(resume)) throw new ConfigError([`--resume: expected a job id (letters, digits, '_' or '-'), got ${JSON.stringify(resume)}`]);
      argv = [...argv.slice(0, ri), ...argv.slice(ri + 2)];
    }
    loaded = resume && splitArgs(argv).configPath === null ? await resumedConfig(resume, argv) : loadConfig(argv, "train");
    if (resume) {
      loaded.config.launch.job_id = resume;
      loaded.config.train.load_checkpoint_path = "auto"; // the output_dir's earlier run is this job's: continued
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      say(e.message);
      return 2;
    }
    throw e;
  }
  const { config, rest } = loaded;
  if (rest.length > 0) {
    say(`unexpected argument(s) ${rest.join(" ")} (expected --config FILE, --resume JOB and --group.field VALUE; see --help)`);
    return 2;
  }
  if (printConfig) {
    process.stdout.write(configYaml(config));
    return 0;
  }
  if (config.launch.nats !== null && config.launch.nats_token === null && Bun.env.VEOMNI_NATS_TOKEN) config.launch.nats_token = Bun.env.VEOMNI_NATS_TOKEN;

  const pre = await preflightTrain(config);
  for (const w of pre.warnings) say(`warning: ${w}`);
  if (pre.problems.length > 0) {
    say(pre.problems.length === 1 ? pre.problems[0] : `${pre.problems.length} problems, nothing was started:\n  ${pre.problems.join("\n  ")}`);
    return 2;
  }
  try {
    await checkNats(config);
    if (resume) await checkResumable(resume, config);
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    say(e.message);
    return 2;
  }

  const outputDir = config.train.output_dir!;
  let log: Logger | null = null;
  try {
    const resolved = writeResolvedConfig(config, outputDir);
    log = makeLogger("coordinator", outputDir);
    log.info({ resolved }, "configuration resolved");
    for (const w of pre.warnings) log.warn(w);
    // Every job, world size 1 included, runs as coordinator + worker processes: the same path
    // (NATS job record, checkpoints, supervision) whatever the size.
    const code = await runJob(config, log, { view: { progress: true, plots: true, summary: true }, resume: resume !== null });
    const st = code === 0 ? null : readJobCopy(outputDir);
    if (st?.last_checkpoint) say(`${st.last_checkpoint} is committed; resume from it: bun run coordinator --config ${join(outputDir, "veomni_cli.yaml")} --train.load_checkpoint_path auto`);
    return code;
  } catch (e) {
    // one line for the user (a full disk, an unreachable server); the stack only at debug level
    const err = e instanceof Error ? e : new Error(String(e));
    try {
      log?.debug({ stack: err.stack }, "coordinator failed");
    } catch {
      // the log file may be what failed (a full disk): the line below still says why
    }
    say(err.message);
    return 1;
  }
}

/** --resume JOB: a record of JOB exists (KV, else OUTPUT_DIR/job.json) and JOB has not ended
 *  done; before anything is written (resume.ts whyNotResumable). */
async function checkResumable(job: string, c: Config): Promise<void> {
  let kvRecord: JobState | null = null;
  const url = c.launch.nats;
  if (url !== null) {
    const nc = await connectNats({ url, token: c.launch.nats_token ?? undefined, name: "veomni-resume-check" });
    try {
      kvRecord = await withTimeout(readJson<JobState>(await openBucket(nc), keys.state(job)), 10_000, `read ${keys.state(job)}`);
    } finally {
      await nc.close();
    }
  }
  const out = c.train.output_dir!;
  const why = whyNotResumable(job, kvRecord, readJobCopy(out), { kv: url && `KV bucket veomni_jobs at ${url}`, copy: join(out, JOB_COPY) });
  if (why) throw new UserError(why);
}

/** An external NATS server: reachable and accepting our token, before the job is created. */
async function checkNats(c: Config): Promise<void> {
  const url = c.launch.nats;
  if (url === null) return;
  const nc = await connectNats({ url, token: c.launch.nats_token ?? undefined, name: "veomni-coordinator-check" }).catch((e) => {
    throw new UserError(natsConnectError(url, e, "--launch.nats_token", "--launch.nats"));
  });
  await nc.close();
}

process.exitCode = await main(process.argv.slice(2));
