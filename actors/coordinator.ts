// The coordinator owns one job: control plane (embedded nats-server or an external one), the
// job record in KV, rendezvous, the step schedule, metrics, liveness and the clean end.
// Each step is one command to every rank and one report back from each: no NATS traffic per
// micro-batch. Any failure stops every rank (one-for-all, see supervision.ts).
import { cpus, hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { basename, join, relative, resolve } from "node:path";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import type { Config } from "../configs/index.ts";
import { startNatsServer, type NatsServer } from "./embedded.ts";
import { CasRecord, connectNats, keys, openBucket, retrying, toJson, type JobState, type RankRecord } from "./nats.ts";
import { liveWatch } from "./kv_watch.ts";
import { Actor } from "./mailbox.ts";
import { PROTOCOL_VERSION, decodeToCoordinator, encode, subjects, type PeerInfo, type StepMetrics, type ToWorker } from "./protocol.ts";
import { Rendezvous } from "./rendezvous.ts";
import { LocalWorkers } from "./spawn.ts";
import { MetricsSink, mergeStep, type MetricsLine } from "./metrics.ts";
import { RunView } from "./run_view.ts";
import { mergeTraces } from "./trace.ts";
import { decide, describe, precedence, type Failure } from "./supervision.ts";

/** How long the first failure of an attempt waits for a better headline (see precedence). */
const SETTLE_MS = 500;
import { Commits } from "./commits.ts";
import { markOrphanedJobs } from "./orphans.ts";
import { assertOwnEpoch, readJobCopy, writeJobCopy } from "./job_copy.ts";
import { prepareOutputDir } from "./output_dir.ts";
import { resolveLoadPath } from "../checkpoint/index.ts";
import { previousRecord, stepOf, stopStaleLocalRanks, trimMetrics } from "./resume.ts";
import { AdoptionFailed, planAdoption, whyNotAdoptable, type Adopted } from "./adopt.ts";

export interface RunJobOptions {
  /** step implementation the workers build: "train" (default) or "toy" (runtime tests). */
  runner?: string;
  /** abort = Ctrl-C (the coordinator also handles SIGINT/SIGTERM itself while the job runs). */
  signal?: AbortSignal;
  /** what a person at the command line sees (run_view.ts); default: none of it (tests, embedding).
   *  TensorBoard event files are written whatever this says. */
  view?: { progress?: boolean; plots?: boolean; summary?: boolean };
  /** called once the job exists in KV (tests read the KV record while the job runs). */
  onStarted?: (info: JobInfo) => void | Promise<void>;
  /** awaited after each step's metrics line and KV update, before the next step (checkpoint commits, tests). */
  onStep?: (m: MetricsLine, job: JobInfo) => void | Promise<void>;
  /** extra environment for local workers. */
  workerEnv?: Record<string, string>;
  /** take over launch.job_id after its coordinator died (resume.ts): next epoch, newest commit. */
  resume?: boolean;
}

export interface JobInfo {
  job: string;
  natsUrl: string;
  token: string | null;
  epoch: number;
}

class JobFailed extends Error {
  constructor(readonly failure: Failure) {
    super(describe(failure));
  }
}

export function jobIdFor(config: Config): string {
  if (config.launch.job_id) return config.launch.job_id;
  const base = basename(resolve(config.train.output_dir ?? "job")).replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 40) || "job";
  const t = new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14);
  return `${base}-${t}-${randomBytes(3).toString("hex")}`;
}

export async function runJob(config: Config, logger: Logger, opts: RunJobOptions = {}): Promise<number> {
  const l = config.launch;
  const embedded = l.nats === null;
  const world = l.world_size;
  const nLocal = l.local_workers ?? (embedded ? world : 0);
  if (nLocal > world) throw new Error(`launch.local_workers(${nLocal}) is above launch.world_size(${world})`);
  if (embedded && nLocal < world) throw new Error(`launch.local_workers(${nLocal}) < launch.world_size(${world}) needs launch.nats (remote workers cannot reach an embedded loopback server)`);

  let server: NatsServer | null = null;
  let natsFile: string | null = null;
  let nc: NatsConnection | null = null;
  let workers: LocalWorkers | null = null;
  const job = jobIdFor(config);
  const cleanups: Array<() => void> = [];
  // Failures go to the current attempt (a restart starts a new one); the first one wins.
  let attemptRaise: (f: Failure) => void = () => {};
  const raise = (f: Failure) => attemptRaise(f);
  // SIGINT/SIGTERM stop the job (recorded "stopped", workers stopped). Handled for the whole of
  // runJob, its cleanup included, and however often they come: launchers signal both `bun run`
  // and its child (two SIGTERMs), people press Ctrl-C twice; with `once`, the second one killed
  // the coordinator before it recorded the stop. A repeat is only logged (kill -9 forces).
  let signalled: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      logger.warn({ job, signal: sig }, `${sig} again: already stopping on ${signalled} (recording the job stopped, stopping workers); kill -9 ${process.pid} forces`);
      return;
    }
    signalled = sig;
    raise({ kind: "interrupted", signal: sig });
  };
  const signalHandlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const h = () => onSignal(sig);
    process.on(sig, h);
    return () => process.off(sig, h);
  });
  if (opts.signal) {
    const h = () => raise({ kind: "interrupted", signal: "SIGINT" });
    if (opts.signal.aborted) h();
    opts.signal.addEventListener("abort", h);
    cleanups.push(() => opts.signal!.removeEventListener("abort", h));
  }

  let state!: JobState;
  let stateRec!: CasRecord<JobState>;
  // All writes of <job>.state go through one mailbox: CAS writes must not race each other.
  // Each write is mirrored to OUTPUT_DIR/job.json (`bun run jobs --dir` reads it once the server is gone).
  let copyFailed = false;
  const stateWriter = new Actor<JobState, void>("job-state", async (st) => {
    const rec = { ...st, updated_at: new Date().toISOString() };
    await retrying(`write ${keys.state(job)}`, () => stateRec.writeOwned(rec, (cur) => cur.coordinator.pid === process.pid && cur.coordinator.host === hostname()), 60_000);
    if (!config.train.output_dir) return;
    // The copy is a convenience beside the KV record (the source of truth): a failed write (a
    // full disk) is warned about once, never a reason to stop the job.
    try {
      writeJobCopy(config.train.output_dir, rec);
      copyFailed = false;
    } catch (e) {
      if (!copyFailed) logger.warn({ err: (e as Error).message }, "could not update the job record's copy; bun run jobs --dir will show an older state");
      copyFailed = true;
    }
  });
  let exitCode = 0;
  let run: JobRun | null = null;
  try {
    prepareOutputDir(config, logger); // an earlier run's results: refused, unless resumed or overwritten
    if (embedded) {
      // `bun run jobs --dir OUTPUT_DIR` reads the job record through this (owner-only; removed with
      // the server, also by its watchdog when this process dies without cleaning up)
      natsFile = config.train.output_dir ? join(config.train.output_dir, ".nats") : null;
      server = await startNatsServer({ host: "127.0.0.1", alsoRemove: natsFile ? [natsFile] : [] });
      logger.info({ url: server.url, nats_pid: server.proc.pid, nats_dir: server.dir }, "embedded nats-server started");
      if (natsFile) {
        mkdirSync(config.train.output_dir!, { recursive: true });
        writeFileSync(natsFile, `${server.url}\n${server.token}\n`, { mode: 0o600 });
      }
    }
    const natsUrl = server?.url ?? l.nats!;
    const token = server?.token ?? l.nats_token;
    nc = await connectNats({ url: natsUrl, token: token ?? undefined, name: `veomni-coordinator-${job}` });
    const kv = await openBucket(nc);
    // a shared NATS may hold jobs whose coordinator died without recording an end
    // (not the job this one resumes: its ranks may be waiting to be adopted)
    if (!embedded) for (const st of await markOrphanedJobs(kv, `coordinator pid ${process.pid} on ${hostname()}`, opts.resume ? job : undefined)) logger.warn({ job: st.job }, `job ${st.job} recorded as failed: ${st.error}`);
    let prev = opts.resume ? await previousRecord(kv, job, l.dead_after_s) : null;
    // A server without the job's record (an embedded one, or a new one after a Slurm requeue): its
    // copy in output_dir carries the epoch on, so a resumed job never reuses an epoch (nor its
    // checkpoint file names). Not checked for life: a coordinator is bound to the server it created
    // the record on, and that one is gone.
    if (opts.resume && !prev && config.train.output_dir) {
      const copy = readJobCopy(config.train.output_dir);
      if (copy?.job === job) prev = copy;
    }
    state = {
      job, phase: "rendezvous", epoch: (prev?.epoch ?? 0) + 1, world_size: world, step: 0, max_steps: config.train.max_steps ?? 0, loss: null, tokens_per_s: null,
      last_checkpoint: null, error: null, coordinator: { host: hostname(), pid: process.pid }, output_dir: resolve(config.train.output_dir ?? "."),
      runner: opts.runner ?? "train", updated_at: new Date().toISOString(),
    };
    let resumeFrom: string | null | undefined; // undefined: train.load_checkpoint_path decides
    /** --resume: every rank restarts from the newest commit on disk (the record's last_checkpoint
     *  may lag it by one write); local leftovers of older epochs are stopped first. */
    const restartFromNewest = async (why: string) => {
      await stopStaleLocalRanks(kv, job, world, logger);
      resumeFrom = state.runner === "train" && config.train.output_dir ? resolveLoadPath("auto", config.train.output_dir) : null;
      const step = stepOf(resumeFrom);
      const dropped = config.train.output_dir ? trimMetrics(config.train.output_dir, step) : 0;
      Object.assign(state, { phase: "rendezvous", step, last_checkpoint: resumeFrom ? relative(state.output_dir, resolve(resumeFrom)) : null });
      delete state.adopt_from;
      logger.warn({ job, epoch: state.epoch, previous: prev && { epoch: prev.epoch, phase: prev.phase, step: prev.step, coordinator: prev.coordinator }, resumeFrom, redo_from_step: step + 1, dropped_metrics_lines: dropped },
        `resuming job ${job} under epoch ${state.epoch} from ${resumeFrom ?? "step 0 (nothing committed)"}: ${why}`);
    };
    /** --resume with every rank alive: the epoch they are adopted from (adopt.ts), else null. */
    let adoptFrom: number | null = null;
    if (opts.resume) {
      const why = prev ? await whyNotAdoptable(kv, prev, l.dead_after_s) : "the job has no record";
      if (why === null && prev) {
        adoptFrom = prev.epoch;
        Object.assign(state, { phase: "running", step: prev.step, max_steps: prev.max_steps, loss: prev.loss, last_checkpoint: prev.last_checkpoint, adopt_from: prev.epoch });
        logger.warn({ job, epoch: state.epoch, previous: { epoch: prev.epoch, step: prev.step, coordinator: prev.coordinator } }, `adopting the running ranks of job ${job} (epoch ${prev.epoch}) under epoch ${state.epoch}`);
      } else await restartFromNewest(`the ranks cannot be adopted: ${why}`);
      await kv.put(keys.config(job), toJson(config));
    } else await kv.create(keys.config(job), toJson(config)).catch((e) => {
      const msg = (e as Error).message;
      if (!/exists|wrong last sequence/i.test(msg)) throw new Error(`job ${job}: cannot write ${keys.config(job)} in KV bucket veomni_jobs: ${msg}`);
      throw new Error(`job ${job}: ${keys.config(job)} already exists in KV bucket veomni_jobs (${msg}); choose another launch.job_id`);
    });
    stateRec = new CasRecord<JobState>(kv, keys.state(job));
    if (opts.resume) await stateRec.adopt(state);
    else await stateRec.create(state);
    const info: JobInfo = { job, natsUrl, token, epoch: state.epoch };
    await opts.onStarted?.(info);
    logger.info({ job, world, local: nLocal, nats: natsUrl }, "job created");

    // local workers share this host's cores (kernels.threads 0 = divide them)
    const threads = config.kernels.threads || Math.max(1, Math.floor(cpus().length / Math.max(1, nLocal)));
    let restarts = 0;
    for (;;) {
      let rej!: (e: JobFailed) => void;
      const failed = new Promise<never>((_, r) => (rej = r));
      failed.catch(() => {}); // handled where it is raced below; this only keeps an unraced attempt quiet
      // Failures come in bursts (a killed rank, then the survivors whose links to it broke): the
      // headline is the one of highest precedence seen within SETTLE_MS of the first.
      let best: Failure | null = null;
      let settle: ReturnType<typeof setTimeout> | null = null;
      attemptRaise = (f) => {
        if (best && precedence(f) >= precedence(best)) return;
        best = f;
        if (precedence(f) <= 1) {
          if (settle) clearTimeout(settle);
          rej(new JobFailed(f));
        } else settle ??= setTimeout(() => rej(new JobFailed(best!)), SETTLE_MS);
      };
      // a stop asked for before this attempt could take it (starting up, between restarts)
      if (signalled) attemptRaise({ kind: "interrupted", signal: signalled });
      else if (opts.signal?.aborted) attemptRaise({ kind: "interrupted", signal: "SIGINT" });
      run = new JobRun(nc, kv, config, job, state, stateWriter, logger, raise, opts, info, resumeFrom, adoptFrom);
      workers = new LocalWorkers({ natsUrl, token, job, outputDir: config.train.output_dir, env: { VEOMNI_THREADS: String(threads), ...opts.workerEnv } }, (e) =>
        raise({ kind: "exited", rank: e.rank, pid: e.pid, code: e.code, signal: e.signal, stderrTail: e.stderrTail }),
      );
      try {
        await Promise.race([run.execute(nLocal, workers), failed]);
        state.phase = "done";
        break;
      } catch (e) {
        // An error of the coordinator's own part (a checkpoint clash found at start, a full disk
        // writing model_assets, a missing checkpoint): the job cannot run as configured.
        if (e instanceof AdoptionFailed) {
          // not a failure of the job: the ranks were not fit to keep; restart them all (no restart
          // counted) under an epoch past the one some of them may have switched to
          run.close();
          nc.publish(subjects(job).cmd, encode({ v: PROTOCOL_VERSION, kind: "stop", job, epoch: state.epoch, reason: `adoption failed: ${e.message}` }));
          adoptFrom = null;
          state.epoch++;
          info.epoch = state.epoch;
          await restartFromNewest(`adoption failed: ${e.message}`);
          await stateWriter.ask(state);
          continue;
        }
        if (!(e instanceof JobFailed)) logger.debug({ stack: (e as Error).stack }, "job refused");
        const failure: Failure = e instanceof JobFailed ? e.failure : { kind: "refused", error: e instanceof Error ? e.message : String(e) };
        if (settle) clearTimeout(settle);
        const d = decide(failure, { restarts, maxRestarts: l.max_restarts, lastCheckpoint: state.last_checkpoint });
        adoptFrom = null;
        if (d.action === "restart") {
          // one-for-all: stop this generation everywhere, then a new epoch resumes from the last commit
          logger.warn({ job, epoch: state.epoch }, `restarting: ${d.reason}`);
          run.close();
          nc.publish(subjects(job).cmd, encode({ v: PROTOCOL_VERSION, kind: "stop", job, epoch: state.epoch, reason: d.reason }));
          await workers.reap(3000);
          restarts++;
          Object.assign(state, { epoch: state.epoch + 1, phase: "rendezvous", error: null });
          info.epoch = state.epoch;
          await stateWriter.ask(state);
          resumeFrom = d.fromCheckpoint === null ? null : join(state.output_dir, d.fromCheckpoint);
          continue;
        }
        exitCode = d.exitCode;
        logger.error({ job }, `job stopped: ${d.reason}`);
        state.phase = failure.kind === "interrupted" ? "stopped" : "failed";
        state.error = d.reason;
        break;
      }
    }
  } finally {
    run?.close();
    for (const c of cleanups) c();
    // Tell everyone: the KV phase (workers watch it) and a stop command; then reap local children.
    if (nc && state && stateRec) {
      if (state.phase === "rendezvous" || state.phase === "running") state.phase = "failed";
      await stateWriter.ask(state).catch((e) => logger.warn({ err: String(e) }, "could not record the final state"));
      const stop: ToWorker = { v: PROTOCOL_VERSION, kind: "stop", job, epoch: state.epoch, reason: state.error ?? "done" };
      nc.publish(subjects(job).cmd, encode(stop));
      await nc.flush().catch((e) => logger.warn({ err: String(e) }, "could not flush the stop command (NATS unreachable): workers stop at their coordinator deadline"));
    }
    await workers?.reap(exitCode === 0 ? 10_000 : 3000);
    await nc?.close().catch((e) => logger.debug({ err: String(e) }, "NATS close after the connection was lost"));
    await server?.stop();
    if (natsFile) rmSync(natsFile, { force: true });
    for (const off of signalHandlers) off();
  }
  logger.info({ job, exitCode }, exitCode === 0 ? "job done" : "job ended with an error");
  return exitCode;
}

/** The live part of a job: rendezvous, ready barrier, steps, liveness. */
class JobRun {
  private subs: Subscription[] = [];
  private waiter: { step: number; reports: Map<number, StepMetrics>; done: () => void } | null = null;
  private ready = new Map<number, { totalSteps: number; startStep: number; canSave: boolean }>();
  private commits: Commits | null = null;
  private readyDone: () => void = () => {};
  private lastSeen = new Map<number, number>();
  private connected = true;
  private currentCmd: Uint8Array | null = null;
  private timers: ReturnType<typeof setInterval>[] = [];
  private watches: Array<{ stop(): void }> = [];
  /** checkpoints committed by this run, and what to do after each (redraw the plots). */
  private committed = 0;
  private onCommitted: () => void = () => {};
  private view: RunView | null = null;

  constructor(
    private nc: NatsConnection,
    private kv: KV,
    private config: Config,
    private job: string,
    private state: JobState,
    private stateWriter: Actor<JobState, void>,
    private log: Logger,
    private raise: (f: Failure) => void,
    private opts: RunJobOptions,
    private info: JobInfo,
    /** a restart: resume from this committed checkpoint instead of train.load_checkpoint_path */
    private resumeOverride?: string | null,
    /** --resume with live ranks: adopt those of this epoch instead of a rendezvous (adopt.ts) */
    private adoptFrom: number | null = null,
  ) {}

  async execute(nLocal: number, workers: LocalWorkers): Promise<void> {
    const l = this.config.launch;
    const subj = subjects(this.job);
    const secret = randomBytes(32).toString("hex");
    const out = this.config.train.output_dir;
    // checkpoints only for the real step (the toy runner has no state worth saving)
    const resumeFrom = this.resumeOverride !== undefined ? this.resumeOverride : (this.state.runner === "train" && out ? resolveLoadPath(this.config.train.load_checkpoint_path, out, (m) => this.log.warn(m)) : null);
    if (this.state.runner === "train" && out) {
      this.commits = new Commits(this.config, out, l.world_size, this.state.epoch, this.log,
        async (relDir) => {
          this.state.last_checkpoint = relDir;
          this.committed++;
          await this.writeState();
          this.onCommitted();
        },
        // rank -1: the commit itself failed here (metadata.json could not be written)
        (rank, step, error) => this.raise(rank < 0 ? { kind: "refused", error } : { kind: "reported", rank, step, error: `checkpoint save failed: ${error}` }),
      );
      this.commits.writeAssets();
    }
    const rdv = new Rendezvous(
      this.job, l.world_size, () => this.state.epoch,
      (rank, peers): ToWorker => ({ v: PROTOCOL_VERSION, kind: "welcome", job: this.job, rank, epoch: this.state.epoch, secret, peers, config: this.config, runner: this.state.runner, resumeFrom }),
      (rank) => workers.pid(rank),
      (msg, f) => this.log.info(f, msg),
    );
    const readyAll = new Promise<void>((r) => (this.readyDone = r));
    if (this.adoptFrom === null) this.subs.push(this.nc.subscribe(subj.register, { callback: (err, msg) => void (err || rdv.onRequest(msg)) }));
    this.subs.push(this.nc.subscribe(subj.report, { callback: (err, msg) => void (err || this.onReport(msg.data)) }));
    await this.nc.flush();
    if (this.adoptFrom === null) for (let r = 0; r < nLocal; r++) workers.spawn(r);
    this.timers = this.startLiveness();
    try {
      let start: number, total: number, saving: boolean;
      if (this.adoptFrom !== null) {
        ({ start, total, saving } = await this.adopt(this.adoptFrom));
      } else {
        if (nLocal < l.world_size) this.log.info({ ranks: rdv.missing }, `waiting for remote workers: bun run worker --rank N --nats ${this.config.launch.nats}`);
        const peers: PeerInfo[] = await rdv.all;
        for (const p of peers) this.lastSeen.set(p.rank, Date.now());
        await readyAll;
        const readies = [...this.ready.values()];
        total = Math.min(...readies.map((r) => r.totalSteps));
        start = readies[0].startStep;
        if (readies.some((r) => r.startStep !== start)) throw new Error(`ranks resumed at different steps: ${readies.map((r) => r.startStep).join(", ")}`);
        saving = this.commits !== null && readies.every((r) => r.canSave);
        if (saving) this.commits!.refuseClashes(start, total);
        this.log.info({ peers: peers.map((p) => p.addr), steps: total, start, resumeFrom }, "rendezvous done; running");
      }
      this.state.max_steps = total;
      this.state.phase = "running";
      await this.writeState();
      const sink = new MetricsSink(this.config.train.output_dir, { startStep: start, epoch: this.state.epoch });
      const v = this.opts.view ?? {};
      const view = (this.view = new RunView(this.config, total, start, this.log, { progress: v.progress ? (process.stderr.isTTY ? "tty" : "lines") : "off" }));
      this.onCommitted = () => void (v.plots && view.plot());
      for (let s = start; s < total; s++) {
        const t0 = performance.now();
        const save = saving && this.commits!.due(s + 1, total);
        if (save) this.commits!.begin(s + 1);
        const reports = await this.runStep(s, save);
        let wallS = (performance.now() - t0) / 1000;
        // the first step after an adoption may come from the ranks' cached reports: their own time
        if (s === start && this.adoptFrom !== null) wallS = Math.max(wallS, ...reports.map((r) => r.stepTimeS));
        const m = mergeStep(s, reports, wallS);
        assertOwnEpoch(this.config.train.output_dir, this.state.epoch, `metrics of step ${m.step}`);
        sink.write(m);
        view.step(m);
        this.state.step = m.step;
        this.state.loss = m.loss;
        this.state.tokens_per_s = m.tokens_per_s;
        await this.writeState();
        await this.opts.onStep?.(m, this.info);
      }
      let hfDir: string | null = null;
      if (saving) {
        await this.commits!.drain(); // wait on ranks: saves still being written
        hfDir = this.commits!.exportHf(total);
      }
      if (this.config.train.enable_profiling) {
        // every rank wrote its file before reporting its last profiled step
        const merged = mergeTraces(this.config.train.profile_trace_dir);
        if (merged) this.log.info({ file: merged.path, ranks: merged.ranks }, "profile traces merged (open in ui.perfetto.dev)");
      }
      await view.end({ plots: v.plots === true, summary: v.summary === true, lastCheckpoint: this.state.last_checkpoint, checkpoints: this.committed, hfDir });
    } finally {
      this.close();
    }
  }

  /** Stop timers, watches and subscriptions (also when a failure abandons execute()). */
  close(): void {
    this.view?.close();
    for (const t of this.timers) clearInterval(t);
    for (const w of this.watches) w.stop();
    for (const s of this.subs) s.unsubscribe();
    this.timers = [];
    this.watches = [];
    this.subs = [];
  }

  /** Saves' outcomes that arrive while adopting, held until the adopted saves are begun. */
  private heldSaves: Array<{ rank: number; step: number; report?: unknown; error?: string }> | null = null;
  private adopted = new Map<number, Adopted>();
  private adoptedAll: (() => void) | null = null;

  /**
   * Adopt the live ranks of epoch `from` (adopt.ts): send `adopt` until every rank answered, within
   * launch.dead_after_s (repeated: core NATS may lose one), check their positions, take over their
   * saves. Throws AdoptionFailed when the ranks cannot be kept.
   */
  private async adopt(from: number): Promise<{ start: number; total: number; saving: boolean }> {
    const l = this.config.launch;
    this.heldSaves = [];
    const all = new Promise<void>((r) => (this.adoptedAll = r));
    const cmd = encode({ v: PROTOCOL_VERSION, kind: "adopt", job: this.job, epoch: this.state.epoch, from });
    this.nc.publish(subjects(this.job).cmd, cmd);
    const again = setInterval(() => this.nc.publish(subjects(this.job).cmd, cmd), Math.max(250, l.heartbeat_s * 1000));
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, l.dead_after_s * 1000)))]);
    } finally {
      clearInterval(again);
      clearTimeout(timer);
      this.adoptedAll = null;
    }
    const replies = [...this.adopted.values()].sort((a, b) => a.rank - b.rank);
    const plan = planAdoption(replies, l.world_size); // throws AdoptionFailed
    for (const a of replies) this.lastSeen.set(a.rank, Date.now());
    const saving = this.commits !== null && plan.canSave;
    let begun: number[] = [];
    if (this.commits) {
      const out = this.config.train.output_dir!;
      const newest = stepOf(resolveLoadPath("auto", out));
      const saves = [...replies.flatMap((a) => a.saves.map((sv) => ({ rank: a.rank, ...sv }))), ...this.heldSaves];
      begun = this.commits.adoptSaves(newest, this.state.epoch, saves);
    }
    this.heldSaves = null;
    delete this.state.adopt_from;
    this.log.warn(
      { epoch: this.state.epoch, from, start: plan.start, total: plan.total, positions: replies.map((a) => ({ rank: a.rank, pid: a.pid, host: a.host, lastDone: a.lastDone, running: a.running })), saves_taken_over: begun },
      `adopted ${replies.length} live ranks of epoch ${from}: sequencing goes on at step ${plan.start + 1} (no step redone)`,
    );
    return { start: plan.start, total: plan.total, saving };
  }

  private runStep(step: number, save: boolean): Promise<StepMetrics[]> {
    return new Promise((resolve) => {
      const reports = new Map<number, StepMetrics>();
      this.waiter = { step, reports, done: () => resolve([...reports.keys()].sort((a, b) => a - b).map((r) => reports.get(r)!)) };
      this.currentCmd = encode({ v: PROTOCOL_VERSION, kind: "step", job: this.job, epoch: this.state.epoch, step, save });
      this.nc.publish(subjects(this.job).cmd, this.currentCmd);
    });
  }

  private onReport(data: Uint8Array): void {
    let m;
    try {
      m = decodeToCoordinator(data);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "dropped a malformed report");
      return;
    }
    if (m.kind === "register") return;
    if (m.epoch !== this.state.epoch) {
      this.log.warn({ rank: m.rank, epoch: m.epoch, current: this.state.epoch }, `refused a ${m.kind} report from stale epoch ${m.epoch}`);
      return;
    }
    if ((m.kind === "ckpt_done" || m.kind === "ckpt_failed") && this.heldSaves) {
      this.heldSaves.push(m.kind === "ckpt_done" ? { rank: m.rank, step: m.step, report: m.report } : { rank: m.rank, step: m.step, error: m.error });
    } else if (m.kind === "adopted") {
      if (this.adopted.has(m.rank) || !this.adoptedAll) return; // a repeat
      this.adopted.set(m.rank, m);
      if (this.adopted.size === this.config.launch.world_size) this.adoptedAll();
    } else if (m.kind === "ckpt_done") {
      this.commits?.onReport(m.epoch, m.rank, m.step, m.report);
    } else if (m.kind === "ckpt_failed") {
      this.raise({ kind: "reported", rank: m.rank, step: m.step, error: `checkpoint save failed: ${m.error}` });
    } else if (m.kind === "ready") {
      this.ready.set(m.rank, { totalSteps: m.totalSteps, startStep: m.startStep, canSave: m.canSave });
      if (this.ready.size === this.config.launch.world_size) this.readyDone();
    } else if (m.kind === "failed") {
      this.raise({ kind: "reported", rank: m.rank, step: m.step, error: m.error });
    } else if (m.kind === "step_done") {
      const w = this.waiter;
      if (!w || w.step !== m.step) return; // a duplicate re-sent after a reconnect
      w.reports.set(m.rank, m.metrics);
      if (w.reports.size === this.config.launch.world_size) {
        this.waiter = null;
        w.done();
      }
    }
  }

  private writeState(): Promise<void> {
    return this.stateWriter.ask({ ...this.state });
  }

  /** A watch ends when the job closes (expected); otherwise say what stopped it. */
  private watchEnded(what: string, e: unknown): void {
    if (this.nc.isClosed() || this.timers.length === 0) this.log.debug({ err: String(e) }, `${what} ended with the job`);
    else this.log.warn({ err: String(e) }, `${what} failed; heartbeat deadlines go on from the last beat seen`);
  }

  /**
   * Heartbeat deadlines (paused while NATS is unreachable), coordinator liveness touch, reconnect
   * re-sends. The rank records arrive through a watch that stalls while the bucket's stream leader
   * changes (kv_watch.ts), so a rank silent past launch.dead_after_s is declared dead only once a
   * direct read of its record shows no write since the last one seen.
   */
  private startLiveness(): ReturnType<typeof setInterval>[] {
    const l = this.config.launch;
    const beatMs = l.heartbeat_s * 1000;
    const deadMs = l.dead_after_s * 1000;
    const w = liveWatch(this.kv, {
      what: "rank heartbeat watch",
      key: `${this.job}.ranks.>`,
      // every rank writes each heartbeat_s: three periods of nothing from any rank is a stall
      quietMs: Math.max(1000, Math.min(3 * beatMs, deadMs / 3)),
      maxQuietMs: deadMs,
      onEntry: (e) => {
        if (e.operation !== "PUT") return;
        const r = e.json<RankRecord>();
        if (r.epoch === this.state.epoch && this.lastSeen.has(r.rank)) this.lastSeen.set(r.rank, Date.now());
      },
      closed: () => this.nc.isClosed(),
      log: this.log,
    });
    this.watches.push(w);
    void (async () => {
      for await (const s of this.nc.status()) {
        if (s.type === "disconnect") {
          this.connected = false;
          this.log.warn("NATS disconnected; heartbeat deadlines paused");
        } else if (s.type === "reconnect") {
          this.connected = true;
          for (const r of this.lastSeen.keys()) this.lastSeen.set(r, Date.now());
          this.log.info("NATS reconnected; re-sending the current step command");
          if (this.currentCmd && this.waiter) this.nc.publish(subjects(this.job).cmd, this.currentCmd);
        }
      }
    })().catch((e) => this.watchEnded("NATS status stream", e));
    const confirming = new Set<number>();
    const confirm = async (rank: number, silentMs: number): Promise<void> => {
      const got = await w.confirm(keys.rank(this.job, rank)); // a newer revision refreshes lastSeen through onEntry
      const now = Date.now();
      const t = this.lastSeen.get(rank);
      if (this.timers.length === 0 || t === undefined || now - t <= deadMs) return; // closed, or alive after all
      // Unanswered (the bucket is electing a leader): nothing is known; wait up to twice the deadline
      // for an answer before the silence alone decides, so a KV that never comes back still ends the job.
      if (got === "unanswered" && now - t <= 2 * deadMs) return;
      this.raise({ kind: "silent", rank, silentS: Math.max(silentMs, now - t) / 1000, deadlineS: l.dead_after_s });
    };
    const check = setInterval(() => {
      if (!this.connected) return;
      const now = Date.now();
      for (const [rank, t] of this.lastSeen) {
        if (now - t <= deadMs || confirming.has(rank)) continue;
        confirming.add(rank);
        void confirm(rank, now - t).finally(() => confirming.delete(rank));
      }
    }, Math.max(100, Math.min(beatMs, deadMs / 4)));
    // Touch <job>.state so workers (and `bun run jobs`) see a live coordinator. Repeat the pending
    // step command: core NATS keeps nothing for a subscriber that is reconnecting, and workers
    // answer a repeat with their cached report (or ignore it while still running the step).
    const touch = setInterval(() => {
      if (!this.connected) return;
      if (this.stateWriter.pending === 0) void this.writeState().catch((e) => this.log.warn({ err: String(e) }, "liveness touch of the job record failed; workers may judge this coordinator silent"));
      // (also while saves are in flight: workers answer a repeat with their checkpoint reports too)
      if (this.currentCmd && (this.waiter || (this.commits?.pending ?? 0) > 0)) this.nc.publish(subjects(this.job).cmd, this.currentCmd);
    }, Math.max(l.heartbeat_s, 0.5) * 1000);
    return [check, touch];
  }
}
