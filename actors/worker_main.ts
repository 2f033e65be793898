// Entry point: `bun run worker [--rank N] [--nats URL] [--job JOB] [--epoch E] [--host ADDR]`.
// Without --rank the rank comes from the launcher's environment (launcher_env.ts: torchrun RANK,
// Slurm SLURM_PROCID, Open MPI OMPI_COMM_WORLD_RANK, Kubernetes JOB_COMPLETION_INDEX).
// The NATS token comes from VEOMNI_NATS_TOKEN (or --token, visible to `ps`); the URL from
// --nats or VEOMNI_NATS_URL. Without --job the worker joins the newest job in rendezvous.
// Exit codes: 0 done, 1 failed, 2 usage, 3 refused by the coordinator, 4 fenced (a newer epoch
// took the rank), 5 orphaned (the coordinator went away), 6 the job failed elsewhere (another rank).
import { makeLogger } from "../configs/index.ts";
import { runWorker } from "./worker.ts";
import { RUNNERS } from "./runners.ts";
import { RANK_VARIABLES, launchRank } from "./launcher_env.ts";
import { connectNats } from "./nats.ts";
import { natsConnectError } from "./cli_errors.ts";

const USAGE = "usage: bun run worker [--rank N] [--nats nats://host:4222] [--job JOB] [--epoch E] [--host ADDR] [--token T]";
const HELP = `${USAGE}

Joins a job as rank N (0 <= N < the job's launch.world_size) and runs its steps until the job ends.
  --rank N      this worker's rank; default: the launcher's RANK (torchrun), SLURM_PROCID (srun),
                OMPI_COMM_WORLD_RANK (mpirun) or JOB_COMPLETION_INDEX (Kubernetes indexed Job)
  --nats URL    the job's NATS server (or VEOMNI_NATS_URL); token from VEOMNI_NATS_TOKEN
  --token T     the NATS token on the command line (visible to ps; prefer VEOMNI_NATS_TOKEN)
  --job JOB     the job id (default: the newest job waiting for workers that has rank N)
  --epoch E     the epoch this worker believes current (a re-joining worker; default 0)
  --host ADDR   this host's address for the data plane (default: the job's launch.host; when that is
                loopback and NATS is not, this host's address toward the NATS server)
Exit codes: 0 done, 1 failed, 2 usage, 3 refused, 4 fenced, 5 orphaned, 6 the job failed elsewhere.`;

function usage(msg: string): never {
  console.error(`worker: ${msg}\n${USAGE}`);
  process.exit(2);
}

const argv = process.argv.slice(2);
if (argv.includes("--help") || argv.includes("-h")) {
  console.log(HELP);
  process.exit(0);
}
const opt: Record<string, string> = {};
const flags = new Set<string>();
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (!a.startsWith("--")) usage(`unexpected argument ${a}`);
  const eq = a.indexOf("=");
  if (eq > 0) opt[a.slice(2, eq)] = a.slice(eq + 1);
  else if (a === "--exit-with-parent") flags.add("exit-with-parent");
  else if (i + 1 < argv.length) opt[a.slice(2)] = argv[++i];
  else usage(`${a} needs a value`);
}
const known = new Set(["rank", "nats", "job", "epoch", "host", "token"]);
for (const k of Object.keys(opt)) if (!known.has(k)) usage(`unknown option --${k} (expected one of ${[...known].map((x) => "--" + x).join(", ")})`);
let launched;
try {
  launched = launchRank(opt.rank, Bun.env);
} catch (e) {
  usage((e as Error).message);
}
if (launched === null) usage(`--rank N is required (or a launcher's ${RANK_VARIABLES.join(", ")} in the environment)`);
const rank = launched.rank;
const natsUrl = opt.nats ?? Bun.env.VEOMNI_NATS_URL;
if (!natsUrl) usage("--nats URL (or VEOMNI_NATS_URL) is required");
if (opt.epoch !== undefined && !/^\d+$/.test(opt.epoch)) usage(`--epoch ${opt.epoch}: expected a non-negative integer`);

// NATS unreachable or refusing the token: one line naming the flag, before anything else
const token = opt.token ?? Bun.env.VEOMNI_NATS_TOKEN;
await connectNats({ url: natsUrl, token, name: `veomni-worker-${rank}-check` }).then(
  (nc) => nc.close(),
  (e) => {
    console.error(`worker rank ${rank}: ${natsConnectError(natsUrl, e, "--token", "--nats")}`);
    process.exit(2);
  },
);

const logger = makeLogger(`worker-${rank}`, Bun.env.VEOMNI_LOG_DIR ?? null);
if (launched.source !== "--rank") logger.info({ rank, world: launched.world, from: launched.source }, "rank from the launcher's environment");

if (flags.has("exit-with-parent")) {
  // Spawned by a local coordinator: our stdin is its pipe. EOF means it is gone (even kill -9).
  process.stdin.on("end", () => {
    logger.error("coordinator process gone (stdin closed); exiting");
    process.exit(5);
  });
  process.stdin.resume();
}

let code: number;
try {
  code = await runWorker({
    natsUrl,
    token,
    rank,
    world: launched.world ?? undefined,
    job: opt.job,
    epoch: opt.epoch === undefined ? 0 : Number(opt.epoch),
    host: opt.host, // default: launch.host, or this host's address toward a non-loopback NATS (host_addr.ts)
    logger,
    runners: RUNNERS,
    threads: Number(Bun.env.VEOMNI_THREADS ?? 0) || 0,
  });
} catch (e) {
  logger.error({ rank, err: e instanceof Error ? e.message : String(e) }, "worker failed");
  console.error(`worker rank ${rank}: ${e instanceof Error ? e.message : String(e)}`);
  code = 1;
}
logger.flush();
process.exit(code);
