// `bun run jobs [JOB] [--nats URL] [--dir OUTPUT_DIR] [--watch]`: the job records in the NATS KV
// bucket veomni_jobs, for users without the NATS CLI. No JOB: one line per job. With JOB: its
// state and one line per rank. --watch follows updates until Ctrl-C.
// Connection: --nats URL, or VEOMNI_NATS_URL, or the embedded server of a running job found in
// OUTPUT_DIR/.nats (written by the coordinator, mode 0600); token from VEOMNI_NATS_TOKEN or that file.
// A job whose coordinator is gone (dead pid on this host, or silent for long) is recorded as
// failed here (actors/orphans.ts), and a rank whose process is gone or silent shows as dead.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { connectNats, openBucket, readJson, keys, type JobState, type RankRecord } from "../actors/nats.ts";
import { markOrphanedJobFailed, rankLiveness } from "../actors/orphans.ts";

function usage(msg: string): never {
  console.error(`jobs: ${msg}\nusage: bun run jobs [JOB] [--nats nats://host:4222] [--dir OUTPUT_DIR] [--watch]`);
  process.exit(2);
}

const argv = process.argv.slice(2);
let job: string | undefined;
let url = Bun.env.VEOMNI_NATS_URL;
let token = Bun.env.VEOMNI_NATS_TOKEN;
let watch = false;
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--watch") watch = true;
  else if (a === "--nats") url = argv[++i] ?? usage("--nats needs a URL");
  else if (a === "--dir") {
    const f = join(argv[++i] ?? usage("--dir needs a folder"), ".nats");
    if (!existsSync(f)) usage(`${f} not found: is a job with an embedded nats-server running there?`);
    const [u, t] = readFileSync(f, "utf8").trim().split("\n");
    url = u;
    token = t;
  } else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else if (job === undefined) job = a;
  else usage(`unexpected argument ${a}`);
}
url ??= "nats://127.0.0.1:4222";

const age = (iso: string) => `${((Date.now() - Date.parse(iso)) / 1000).toFixed(1)}s ago`;
const num = (x: number | null, d = 4) => (x === null || x === undefined ? "-" : Number.isInteger(x) ? String(x) : x.toFixed(d));

function stateLine(s: JobState): string {
  const err = s.error ? `  error: ${s.error}` : "";
  return `${s.job}  ${s.phase}  step ${s.step}/${s.max_steps || "?"}  loss ${num(s.loss)}  ${num(s.tokens_per_s, 0)} tok/s  epoch ${s.epoch}  world ${s.world_size}  updated ${age(s.updated_at)}${err}`;
}

function rankLine(r: RankRecord, deadAfterS: number): string {
  return `  rank ${r.rank}  ${rankLiveness(r, deadAfterS)}  step ${r.step}  ${r.host} pid ${r.pid}  data ${r.addr}  rss ${r.rss_mb} MB  heartbeat ${age(r.heartbeat_at)}  epoch ${r.epoch}`;
}

const nc = await connectNats({ url, token, name: "veomni-jobs" }).catch((e) => usage(`cannot connect to ${url}: ${(e as Error).message}`));
const kv = await openBucket(nc);

const deadAfter = async (j: string) => (await readJson<{ launch?: { dead_after_s?: number } }>(kv, keys.config(j)))?.launch?.dead_after_s ?? 15;

/** The job's state; a job whose coordinator is gone is recorded as failed first. */
async function stateOf(j: string): Promise<JobState | null> {
  return (await markOrphanedJobFailed(kv, j, `bun run jobs (pid ${process.pid})`)) ?? (await readJson<JobState>(kv, keys.state(j)));
}

async function printAll(): Promise<void> {
  if (job) {
    const st = await stateOf(job);
    if (!st) usage(`no job ${job} in bucket veomni_jobs at ${url}`);
    console.log(stateLine(st));
    const d = await deadAfter(job);
    for (let r = 0; r < st.world_size; r++) {
      const rec = await readJson<RankRecord>(kv, keys.rank(job, r));
      console.log(rec ? rankLine(rec, d) : `  rank ${r}  not joined`);
    }
  } else {
    const names: string[] = [];
    for await (const k of await kv.keys("*.state")) names.push(k);
    let n = 0;
    for (const k of names) {
      const st = await stateOf(k.slice(0, -".state".length));
      if (st) console.log(stateLine(st));
      n++;
    }
    if (n === 0) console.log(`no jobs in bucket veomni_jobs at ${url}`);
  }
}

await printAll();
if (watch) {
  const w = await kv.watch({ key: job ? `${job}.>` : "*.state", include: "updates" });
  process.once("SIGINT", () => w.stop());
  for await (const e of w) {
    if (e.operation !== "PUT") continue;
    if (e.key.endsWith(".state")) console.log(stateLine(e.json<JobState>()));
    else if (e.key.includes(".ranks.")) console.log(rankLine(e.json<RankRecord>(), await deadAfter(e.key.split(".")[0])));
  }
}
await nc.close();
