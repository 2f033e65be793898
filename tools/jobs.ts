// `bun run jobs [JOB] [--nats URL] [--dir OUTPUT_DIR] [--watch]`: the job records in the NATS KV
// bucket veomni_jobs, for users without the NATS CLI. No JOB: one line per job. With JOB: its
// state and one line per rank. --watch redraws as records change until Ctrl-C (in place on a
// terminal, one line per change otherwise).
// Connection: --nats URL (token from VEOMNI_NATS_TOKEN), or --dir OUTPUT_DIR (the embedded server
// of a running job, through OUTPUT_DIR/.nats, mode 0600), or with neither: the newest
// OUTPUT_DIR/.nats under the current folder, else VEOMNI_NATS_URL, else nats://127.0.0.1:4222.
// A finished job's server is gone: --dir then prints the copy kept in OUTPUT_DIR/job.json.
// A job whose coordinator is gone (dead pid on this host, or silent for long) is recorded as
// failed here (actors/orphans.ts), and a rank whose process is gone or silent shows as dead.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { connectNats, openBucket, readJson, keys, type JobState, type RankRecord } from "../actors/nats.ts";
import { natsConnectError } from "../actors/cli_errors.ts";
import { JOB_COPY, readJobCopy } from "../actors/job_copy.ts";
import { coordinatorGone, markOrphanedJobFailed, rankLiveness } from "../actors/orphans.ts";

const USAGE = "usage: bun run jobs [JOB] [--nats nats://host:4222 | --dir OUTPUT_DIR] [--watch]";
const HELP = `${USAGE}

Prints the jobs' records (phase, step, loss, tokens/s, epoch, errors) and, with JOB, its ranks.
  JOB             one job: its state and one line per rank
  --nats URL      the NATS server holding the records (token: VEOMNI_NATS_TOKEN)
  --dir DIR       the job whose output_dir is DIR: its embedded server while it runs, else the
                  copy of its record kept in DIR/${JOB_COPY}
  --watch         follow changes until Ctrl-C
With neither --nats nor --dir: the newest running job under the current folder (OUTPUT_DIR/.nats),
else VEOMNI_NATS_URL, else nats://127.0.0.1:4222.`;

function usage(msg: string): never {
  console.error(`jobs: ${msg}\n${USAGE}`);
  process.exit(2);
}

const argv = process.argv.slice(2);
if (argv.includes("--help") || argv.includes("-h")) {
  console.log(HELP);
  process.exit(0);
}
let job: string | undefined;
let url = Bun.env.VEOMNI_NATS_URL;
let token = Bun.env.VEOMNI_NATS_TOKEN;
let dir: string | undefined;
let watch = false;
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--watch") watch = true;
  else if (a === "--nats") url = argv[++i] ?? usage("--nats needs a URL");
  else if (a === "--dir") dir = argv[++i] ?? usage("--dir needs a folder");
  else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else if (job === undefined) job = a;
  else usage(`unexpected argument ${a}`);
}

const age = (iso: string) => `${((Date.now() - Date.parse(iso)) / 1000).toFixed(1)}s ago`;
const num = (x: number | null, d = 4) => (x === null || x === undefined ? "-" : Number.isInteger(x) ? String(x) : x.toFixed(d));

function stateLine(s: JobState): string {
  const err = s.error ? `  error: ${s.error}` : "";
  // still "running" with its coordinator gone: its ranks are alive, waiting to be adopted (orphans.ts)
  const gone = coordinatorGone(s, 15);
  const hint = gone ? `  (${gone}; its ranks wait for: bun run coordinator --resume ${s.job})` : "";
  return `${s.job}  ${s.phase}  step ${s.step}/${s.max_steps || "?"}  loss ${num(s.loss)}  ${num(s.tokens_per_s, 0)} tok/s  epoch ${s.epoch}  world ${s.world_size}  updated ${age(s.updated_at)}${err}${hint}`;
}

function rankLine(r: RankRecord, deadAfterS: number): string {
  return `  rank ${r.rank}  ${rankLiveness(r, deadAfterS)}  step ${r.step}  ${r.host} pid ${r.pid}  data ${r.addr}  peak rss ${r.rss_mb} MB  heartbeat ${age(r.heartbeat_at)}  epoch ${r.epoch}`;
}

/** OUTPUT_DIR/.nats of a running embedded server -> [url, token]. */
function natsFileOf(d: string): [string, string] | null {
  const f = join(d, ".nats");
  if (!existsSync(f)) return null;
  const [u, t] = readFileSync(f, "utf8").trim().split("\n");
  return u ? [u, t ?? ""] : null;
}

/** Output folders under `root` (depth <= 3) holding `name`, newest first. */
function findOutputDirs(root: string, name: string, depth = 3): string[] {
  const hits: Array<[number, string]> = [];
  const walk = (d: string, left: number) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return; // unreadable folder: not ours
    }
    if (entries.some((e) => e.name === name && e.isFile())) hits.push([statSync(join(d, name)).mtimeMs, d]);
    if (left === 0) return;
    for (const e of entries) if (e.isDirectory() && e.name !== "node_modules" && !e.name.startsWith(".")) walk(join(d, e.name), left - 1);
  };
  walk(root, depth);
  return hits.sort((a, b) => b[0] - a[0]).map(([, d]) => d);
}

/** A job that has ended (or whose server is unreachable): its kept copy, if any. */
function printCopy(d: string, why: string): never {
  const st = readJobCopy(d);
  if (!st) usage(`${why}, and ${join(d, JOB_COPY)} does not exist: is ${d} a job's train.output_dir?`);
  if (job && st.job !== job) usage(`${join(d, JOB_COPY)} holds job ${st.job}, not ${job}`);
  // a copy that still says rendezvous/running outlived its coordinator (kill -9): say so
  const gone = coordinatorGone(st, 15);
  if (gone) Object.assign(st, { phase: "failed", error: gone });
  console.log(`${stateLine(st)}  (kept copy ${join(d, JOB_COPY)}: ${why})`);
  process.exit(0);
}

if (dir !== undefined) {
  const nf = natsFileOf(dir);
  if (!nf) printCopy(dir, "no nats-server of this job is running");
  [url, token] = nf;
} else if (url === undefined) {
  const live = findOutputDirs(process.cwd(), ".nats")[0];
  if (live) {
    [url, token] = natsFileOf(live)!;
    console.error(`jobs: the newest running job's server, from ${join(live, ".nats")}`);
  } else {
    const kept = findOutputDirs(process.cwd(), JOB_COPY)[0];
    if (kept) printCopy(kept, "no running job found under the current folder; newest kept record");
    url = "nats://127.0.0.1:4222";
  }
}
const natsUrl = url!;

const nc = await connectNats({ url: natsUrl, token, name: "veomni-jobs" }).catch((e) => {
  if (dir !== undefined) printCopy(dir, "its nats-server does not answer");
  usage(`${natsConnectError(natsUrl, e, "VEOMNI_NATS_TOKEN", "--nats")}; point it at a job with --dir OUTPUT_DIR or --nats URL`);
});
const kv = await openBucket(nc);

const deadAfter = async (j: string) => (await readJson<{ launch?: { dead_after_s?: number } }>(kv, keys.config(j)))?.launch?.dead_after_s ?? 15;

/** The job's state; a job whose coordinator is gone is recorded as failed first. */
async function stateOf(j: string): Promise<JobState | null> {
  return (await markOrphanedJobFailed(kv, j, `bun run jobs (pid ${process.pid})`)) ?? (await readJson<JobState>(kv, keys.state(j)));
}

async function snapshot(): Promise<string[]> {
  const out: string[] = [];
  if (job) {
    const st = await stateOf(job);
    if (!st) usage(`no job ${job} in bucket veomni_jobs at ${natsUrl}`);
    out.push(stateLine(st));
    const d = await deadAfter(job);
    for (let r = 0; r < st.world_size; r++) {
      const rec = await readJson<RankRecord>(kv, keys.rank(job, r));
      out.push(rec ? rankLine(rec, d) : `  rank ${r}  not joined`);
    }
  } else {
    const names: string[] = [];
    for await (const k of await kv.keys("*.state")) names.push(k);
    for (const k of names) {
      const st = await stateOf(k.slice(0, -".state".length));
      if (st) out.push(stateLine(st));
    }
    if (out.length === 0) out.push(`no jobs in bucket veomni_jobs at ${natsUrl}`);
  }
  return out;
}

console.log((await snapshot()).join("\n"));
if (watch) {
  const tty = process.stdout.isTTY === true;
  const w = await kv.watch({ key: job ? `${job}.>` : "*.state", include: "updates" });
  process.once("SIGINT", () => w.stop());
  for await (const e of w) {
    if (e.operation !== "PUT") continue;
    if (tty) process.stdout.write(`\x1b[H\x1b[2J${(await snapshot()).join("\n")}\n`); // redraw in place
    else if (e.key.endsWith(".state")) console.log(stateLine(e.json<JobState>()));
    else if (e.key.includes(".ranks.")) console.log(rankLine(e.json<RankRecord>(), await deadAfter(e.key.split(".")[0])));
  }
}
await nc.close();
