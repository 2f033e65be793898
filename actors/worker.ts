// One worker process = one rank. It finds its job in KV, opens its data-plane listener,
// registers (rendezvous), builds its stages from the welcome, then runs each step on one
// command from the coordinator and reports that step's metrics: no NATS traffic per micro-batch.
// It heartbeats into `<job>.ranks.<r>` and exits when the coordinator stops the job, goes silent,
// or when a newer epoch has taken its rank (fencing).
import { hostname } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import { ConfigSchema, type Config } from "../configs/index.ts";
import pkg from "../package.json" with { type: "json" };
import { Actor } from "./mailbox.ts";
import { dataPlaneHost } from "./host_addr.ts";
import { CasRecord, connectNats, keys, openBucket, readJson, retrying, type JobState, type RankRecord } from "./nats.ts";
import { PROTOCOL_VERSION, assertNever, decodeToWorker, encode, subjects, type AdoptedSave, type StepMetrics, type ToCoordinator, type ToWorker } from "./protocol.ts";
import { peakRssMb, type RunnerFactory, type StepRunner } from "./runner.ts";
import { findJob } from "./find_job.ts";
import { liveWatch } from "./kv_watch.ts";

export interface WorkerOptions {
  natsUrl: string;
  token?: string;
  rank: number;
  /** world size the launcher reported (WORLD_SIZE, SLURM_NTASKS, ...): the job must have it. */
  world?: number;
  /** job id; absent: join the newest job in rendezvous that has this rank. */
  job?: string;
  /** epoch the worker believes current (a re-joining worker); 0 = fresh. */
  epoch?: number;
  /** data-plane bind/advertise address (--host); absent: the job's launch.host from KV, or this
   *  host's address toward a NATS server that is not on loopback (host_addr.ts). */
  host?: string;
  portRange?: [number, number];
  logger: Logger;
  runners: Record<string, RunnerFactory>;
  /** compute threads (0: the runner decides from the cores). */
  threads?: number;
}

const VERSION: string = pkg.version;

type StepDone = Extract<ToCoordinator, { kind: "step_done" }>;
/** saves remembered for repeats and adoption (a save older than these is committed or abandoned). */
const SAVES_KEPT = 4;

export const EXIT = { ok: 0, failed: 1, refused: 3, fenced: 4, orphaned: 5, jobFailed: 6 } as const;

export async function runWorker(o: WorkerOptions): Promise<number> {
  const log = o.logger;
  const nc = await connectNats({ url: o.natsUrl, token: o.token, name: `veomni-worker-${o.rank}` });
  try {
    return await new WorkerShell(nc, await openBucket(nc), o).run();
  } finally {
    // closing a connection that NATS already dropped: nothing is lost, the process ends anyway
    await nc.close().catch((e) => log.debug({ err: String(e) }, "NATS close after the connection was lost"));
    log.info({ rank: o.rank }, "worker closed");
  }
}

class WorkerShell {
  private job = "";
  private epoch = 0;
  private runner: StepRunner | null = null;
  private lastDone = -1;
  private running = -1;
  /** the last step's report, said again on a repeated command (encoded with the epoch current then). */
  private lastReport: StepDone | null = null;
  private readyMsg: Uint8Array | null = null;
  /** the last few saves' outcomes by step (undefined: still being written), said again after a
   *  reconnect or on a repeated command (the coordinator ignores repeats), listed in `adopted`. */
  private saves = new Map<number, { report?: unknown; error?: string } | undefined>();
  private finish!: (code: number) => void;
  private readonly done = new Promise<number>((r) => (this.finish = r));
  private record!: CasRecord<RankRecord>;
  private rec!: RankRecord;
  // Rank-record writes (heartbeats, step ends) go through one mailbox: CAS writes must not race.
  private recWriter = new Actor<void, void>("rank-record", () => this.writeRecord());

  constructor(private nc: NatsConnection, private kv: KV, private o: WorkerOptions) {}

  async run(): Promise<number> {
    const { o } = this;
    const log = o.logger;
    this.job = o.job ?? (await findJob(this.kv, o.rank, log, o.world));
    const subj = subjects(this.job);
    // The listener is opened before rendezvous: its address goes in the table. The runner kind is
    // in the welcome, so the address comes from the "train" factory unless the job says otherwise.
    const state = await this.jobRecord();
    if (o.rank >= state.world_size) throw new Error(`--rank ${o.rank}: job ${this.job} has launch.world_size ${state.world_size} (ranks 0..${state.world_size - 1})`);
    if (o.world !== undefined && o.world !== state.world_size)
      throw new Error(`worker rank ${o.rank}: the launcher's world size is ${o.world} but job ${this.job} has launch.world_size = ${state.world_size}`);
    const factory = o.runners[state.runner];
    if (!factory) throw new Error(`worker rank ${o.rank}: unknown runner "${state.runner}" in ${keys.state(this.job)}, expected one of ${Object.keys(o.runners).join(", ")}`);
    const launch = (await readJson<Config>(this.kv, keys.config(this.job)))?.launch;
    const host = await dataPlaneHost({ flag: o.host, launchHost: launch?.host, natsUrl: o.natsUrl }); // not loopback when NATS is remote
    const addr = await factory.listen(o.rank, host, o.portRange ?? launch?.port_range ?? [0, 0], log);

    const reg: ToCoordinator = { v: PROTOCOL_VERSION, kind: "register", job: this.job, rank: o.rank, epoch: o.epoch ?? 0, host: hostname(), pid: process.pid, addr };
    const welcome = await this.register(subj.register, reg);
    if (welcome.kind === "refused") {
      log.error({ rank: o.rank, job: this.job }, `refused by the coordinator: ${welcome.reason}`);
      return EXIT.refused;
    }
    if (welcome.kind !== "welcome") throw new Error(`worker rank ${o.rank}: expected welcome, got ${welcome.kind}`);
    this.epoch = welcome.epoch;
    // The configuration crosses a process (and maybe a version) boundary: check it against this
    // build's schema rather than trust it; a coordinator of another version is refused by name.
    const parsed = ConfigSchema.safeParse(welcome.config);
    if (!parsed.success) {
      const issues = parsed.error.issues.slice(0, 5).map((i) => {
        const at = i.path.map(String).join(".");
        return i.code === "unrecognized_keys" ? `unknown key${i.keys.length > 1 ? "s" : ""} ${i.keys.map((k) => (at ? `${at}.${k}` : k)).join(", ")}` : `${at || "(root)"}: ${i.message}`;
      });
      const error = `the coordinator's configuration does not fit this worker's schema (veomni-ts ${VERSION}): ${issues.join("; ")}; run the coordinator and the workers from the same version`;
      log.error({ rank: o.rank, job: this.job }, `refused: ${error}`);
      this.publish({ v: PROTOCOL_VERSION, kind: "failed", job: this.job, rank: o.rank, epoch: this.epoch, step: -1, error });
      await this.nc.flush().catch((e) => log.warn({ err: String(e) }, "could not flush the refusal (NATS unreachable)"));
      return EXIT.refused;
    }
    const config: Config = parsed.data;
    log.info({ job: this.job, rank: o.rank, epoch: this.epoch, world: welcome.peers.length }, "joined");

    // Rank record + heartbeat (CAS on our own revision: a newer epoch's write fences us out).
    this.record = new CasRecord<RankRecord>(this.kv, keys.rank(this.job, o.rank));
    this.rec = { rank: o.rank, epoch: this.epoch, host: reg.host, pid: process.pid, addr, status: "joined", step: 0, rss_mb: peakRssMb(), heartbeat_ms: Date.now(), heartbeat_at: new Date().toISOString() };
    await retrying(`write ${this.record.key}`, () => this.record.adopt(this.rec));
    const hb = setInterval(() => {
      if (this.recWriter.pending === 0) this.recWriter.send();
      // until the first step command arrives, repeat "ready" (a NATS restart may have lost it)
      if (this.readyMsg && this.running < 0) this.nc.publish(subj.report, this.readyMsg);
    }, config.launch.heartbeat_s * 1000);
    const watchStop = this.watchCoordinator(config);

    // Commands: one at a time through the compute actor's mailbox.
    const stepActor = new Actor<{ step: number; save: boolean }, void>("compute", (m) => this.step(m.step, m.save), (_, err) => this.fail(err));
    const sub = this.nc.subscribe(subj.cmd, {
      callback: (err, msg) => {
        if (err) return;
        let m: ToWorker;
        try {
          m = decodeToWorker(msg.data);
        } catch (e) {
          log.warn({ err: String(e) }, "dropped a malformed command");
          return;
        }
        this.onCommand(m, stepActor);
      },
    });
    try {
      this.runner = await factory.build({ job: this.job, rank: o.rank, worldSize: welcome.peers.length, epoch: this.epoch, secret: welcome.secret, peers: welcome.peers, config, logger: log, threads: o.threads ?? 0, resumeFrom: welcome.resumeFrom });
      this.lastDone = this.runner.startStep - 1; // resumed: the next step is startStep
      this.readyMsg = encode({ v: PROTOCOL_VERSION, kind: "ready", job: this.job, rank: o.rank, epoch: this.epoch, totalSteps: this.runner.totalSteps, startStep: this.runner.startStep, canSave: this.runner.checkpoint !== undefined });
      this.nc.publish(subj.report, this.readyMsg);
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
    const code = await this.done;
    clearInterval(hb);
    watchStop();
    sub.unsubscribe();
    stepActor.stop("worker exiting");
    this.rec.status = code === EXIT.ok ? "done" : "failed";
    if (code !== EXIT.fenced) await this.recWriter.ask().catch((e) => log.warn({ err: String(e) }, `could not record the final status ${this.rec.status} in ${this.record.key} (NATS unreachable?)`));
    // the runner's close waits for the checkpoint writer: a save that failed there must be seen
    await this.runner?.close().catch((e) => log.error({ err: e instanceof Error ? e.message : String(e) }, "closing the step runner failed"));
    return code;
  }

  /** The job's record; a worker given --job may start before its coordinator created it: wait for it. */
  private async jobRecord(): Promise<JobState> {
    const now = await readJson<JobState>(this.kv, keys.state(this.job));
    if (now) return now;
    this.o.logger.info({ job: this.job, rank: this.o.rank }, `job ${this.job} has no record yet; waiting for its coordinator`);
    const w = await this.kv.watch({ key: keys.state(this.job) }); // replays a value written since the read
    try {
      for await (const e of w) if (e.operation === "PUT") return e.json<JobState>();
    } finally {
      w.stop();
    }
    throw new Error(`worker rank ${this.o.rank}: the watch of ${keys.state(this.job)} ended before the job's coordinator created it`);
  }

  private async register(subject: string, reg: ToCoordinator): Promise<ToWorker> {
    // Retry: the coordinator holds the reply until every rank is in, and a NATS restart loses it.
    for (;;) {
      try {
        const r = await this.nc.request(subject, encode(reg), { timeout: 3000 });
        return decodeToWorker(r.data);
      } catch (e) {
        this.o.logger.debug({ err: String(e) }, "register: no answer yet, retrying");
        if (/503|no responders/i.test(String(e))) await Bun.sleep(250); // coordinator not subscribed yet (backoff, not a test wait)
      }
    }
  }

  private onCommand(m: ToWorker, stepActor: Actor<{ step: number; save: boolean }, void>): void {
    switch (m.kind) {
      case "step":
        if (m.epoch !== this.epoch) return; // another generation's command
        if (m.step === this.lastDone && this.lastReport?.step === m.step) {
          // a repeat (NATS may have lost our answers): say them again
          this.sayAgain();
        }
        else if (m.step === this.lastDone + 1 && this.running !== m.step) {
          this.running = m.step;
          stepActor.send({ step: m.step, save: m.save });
        }
        return;
      case "stop":
        if (m.epoch !== this.epoch) return;
        this.o.logger.info({ reason: m.reason }, "stop from the coordinator; exiting");
        this.finish(m.reason === "done" ? EXIT.ok : EXIT.jobFailed);
        return;
      case "adopt":
        this.onAdopt(m);
        return;
      case "welcome":
      case "refused":
        return; // replies to register, not commands
      default:
        assertNever(m, "worker command");
    }
  }

  private async step(s: number, save: boolean): Promise<void> {
    const metrics: StepMetrics = await this.runner!.runStep(s);
    if (save && this.runner!.checkpoint) {
      // checkpoint actor: stage now (part of this step's time), write in the background
      const staged = await this.runner!.checkpoint(s + 1, this.epoch);
      const step = s + 1;
      this.saves.set(step, undefined);
      for (const old of [...this.saves.keys()].slice(0, -SAVES_KEPT)) this.saves.delete(old);
      // the epoch is read when the outcome is sent: a coordinator that adopted this rank meanwhile commits it
      const send = (out: { report?: unknown; error?: string }) => {
        if (this.saves.has(step)) this.saves.set(step, out);
        this.publishSave(step, out);
      };
      staged.durable.then(
        (report) => send({ report }),
        (e) => send({ error: e instanceof Error ? e.message : String(e) }),
      );
    }
    this.lastDone = s;
    this.rec.step = s + 1;
    this.rec.status = "running";
    await this.recWriter.ask(); // the KV record shows the step before the coordinator hears of it
    this.lastReport = { v: PROTOCOL_VERSION, kind: "step_done", job: this.job, rank: this.o.rank, epoch: this.epoch, step: s, metrics };
    this.publish({ ...this.lastReport, epoch: this.epoch });
  }

  private publishSave(step: number, out: { report?: unknown; error?: string }): void {
    const base = { v: PROTOCOL_VERSION, job: this.job, rank: this.o.rank, epoch: this.epoch, step };
    this.publish(out.error !== undefined ? { ...base, kind: "ckpt_failed", error: out.error } : { ...base, kind: "ckpt_done", report: out.report });
  }

  /** Say the last step's report and the saves' outcomes again, under the current epoch. */
  private sayAgain(): void {
    if (this.lastReport) this.publish({ ...this.lastReport, epoch: this.epoch });
    for (const [step, out] of this.saves) if (out) this.publishSave(step, out);
  }

  /**
   * A coordinator took the job over (`coordinator --resume`): if this rank runs under the epoch it
   * adopts (or already switched to it: a repeat), switch and answer with the position. A rank still
   * building its stages is not adopted (it has no position yet): the coordinator restarts the job.
   * The rank's state, data plane and the step it may be computing are kept as they are.
   */
  private onAdopt(m: Extract<ToWorker, { kind: "adopt" }>): void {
    if (!this.readyMsg || !this.runner) return;
    if (this.epoch === m.from) {
      this.o.logger.warn({ from: m.from, epoch: m.epoch, lastDone: this.lastDone, running: this.running }, `adopted by a new coordinator under epoch ${m.epoch}`);
      this.epoch = m.epoch;
      this.rec.epoch = m.epoch;
      this.coordinatorSeen();
      if (this.recWriter.pending === 0) this.recWriter.send();
    } else if (this.epoch !== m.epoch) return;
    const saves: AdoptedSave[] = [...this.saves].map(([step, out]) => ({ step, ...out }));
    this.publish({
      v: PROTOCOL_VERSION, kind: "adopted", job: this.job, rank: this.o.rank, epoch: this.epoch, from: m.from, host: hostname(), pid: process.pid,
      lastDone: this.lastDone, running: this.running > this.lastDone ? this.running : -1, firstStep: this.runner.startStep, totalSteps: this.runner.totalSteps, canSave: this.runner.checkpoint !== undefined, saves,
    });
  }

  private fail(err: Error): void {
    this.o.logger.error({ err: err.message }, "rank failed");
    this.publish({ v: PROTOCOL_VERSION, kind: "failed", job: this.job, rank: this.o.rank, epoch: this.epoch, step: this.running, error: err.message });
    // flush so the report leaves before we exit
    void this.nc
      .flush()
      .catch((e) => this.o.logger.warn({ err: String(e) }, "could not flush the failure report (NATS unreachable): the coordinator learns of it from this exit"))
      .finally(() => this.finish(EXIT.failed));
  }

  private publish(m: ToCoordinator): void {
    this.nc.publish(subjects(this.job).report, encode(m));
  }

  private async writeRecord(): Promise<void> {
    this.rec.heartbeat_ms = Date.now();
    this.rec.heartbeat_at = new Date(this.rec.heartbeat_ms).toISOString();
    this.rec.rss_mb = Math.round(peakRssMb());
    try {
      await this.record.write(this.rec);
    } catch (e) {
      const msg = String(e);
      if (!/wrong last sequence/i.test(msg)) return; // NATS down: the next beat retries
      const cur = await readJson<RankRecord>(this.kv, this.record.key).catch(() => null);
      if (cur && (cur.epoch > this.epoch || cur.pid !== process.pid)) {
        this.o.logger.error({ theirs: cur, epoch: this.epoch }, `fenced: ${this.record.key} now belongs to pid ${cur.pid} epoch ${cur.epoch}`);
        this.finish(EXIT.fenced);
      } else await this.record.adopt(this.rec).catch((e) => this.o.logger.debug({ err: String(e) }, "heartbeat: re-adopting the rank record failed; the next beat retries"));
    }
  }

  /** A watch ends with the connection (expected at exit); otherwise say what stopped it. */
  private watchEnded(what: string, e: unknown): void {
    if (this.nc.isClosed()) this.o.logger.debug({ err: String(e) }, `${what} ended with the connection`);
    else this.o.logger.warn({ err: String(e) }, `${what} failed; the coordinator's liveness is judged by the heartbeat deadline alone`);
  }

  /** When the coordinator last showed life (touched the job record, adopted this rank). */
  private lastSeen = Date.now();
  private coordinatorSeen(): void {
    this.lastSeen = Date.now();
  }

  /**
   * Exit when the job ends or a newer epoch takes it over (fencing). While the coordinator is
   * silent (no touch of `<job>.state`, which it writes every heartbeat_s), this rank keeps its
   * state and waits: after dead_after_s it says so, and it exits (code 5, orphaned) only once the
   * silence passes launch.coordinator_grace_s, the time a `coordinator --resume` has to adopt it.
   * A record that names a newer epoch adopting this one (`adopt_from`) is that takeover: wait for
   * its `adopt` command. (Ranks spawned by the coordinator itself exit with it at once: worker_main.)
   * The record arrives through a watch that stalls while the bucket's stream leader changes
   * (kv_watch.ts): silence is confirmed by a direct read of the record before it counts.
   */
  private watchCoordinator(config: Config): () => void {
    let connected = true;
    const deadMs = config.launch.dead_after_s * 1000;
    const graceMs = config.launch.coordinator_grace_s * 1000;
    const touchMs = Math.max(config.launch.heartbeat_s, 0.5) * 1000; // the coordinator's touch period (coordinator.ts)
    let warned = false;
    const w = liveWatch(this.kv, {
      what: "job state watch",
      key: keys.state(this.job),
      quietMs: Math.max(1000, Math.min(3 * touchMs, deadMs / 3)),
      maxQuietMs: deadMs,
      onEntry: (e) => {
        this.coordinatorSeen();
        if (e.operation !== "PUT") return;
        const st = e.json<JobState>();
        if (st.epoch === this.epoch || st.adopt_from === this.epoch) warned = false;
        if (st.phase === "done" || st.phase === "failed" || st.phase === "stopped") {
          this.o.logger.info({ phase: st.phase, error: st.error }, `the job is ${st.phase}; exiting`);
          this.finish(st.phase === "done" ? EXIT.ok : EXIT.jobFailed);
        } else if (st.epoch > this.epoch && st.adopt_from !== this.epoch) {
          this.o.logger.error({ epoch: st.epoch, mine: this.epoch }, `epoch ${st.epoch} took over the job; exiting`);
          this.finish(EXIT.fenced);
        }
      },
      closed: () => this.nc.isClosed(),
      log: this.o.logger,
    });
    void (async () => {
      for await (const s of this.nc.status()) {
        if (s.type === "disconnect") connected = false;
        if (s.type === "reconnect") {
          connected = true;
          this.coordinatorSeen();
          // what we published while disconnected may be lost: say it again (the coordinator drops duplicates)
          if (!this.lastReport && this.readyMsg) this.nc.publish(subjects(this.job).report, this.readyMsg);
          this.sayAgain();
        }
      }
    })().catch((e) => this.watchEnded("NATS status stream", e));
    let confirming = false;
    const judge = async (): Promise<void> => {
      // a newer revision than the watch delivered: the coordinator is alive (onEntry saw it)
      const got = await w.confirm(keys.state(this.job));
      const silentMs = Date.now() - this.lastSeen;
      if (got === "newer" || silentMs <= deadMs) return;
      if (got === "unanswered" && silentMs <= graceMs) return; // (the bucket is electing a leader: nothing is known yet)
      if (silentMs > graceMs) {
        // (also when the read is unanswered: a job record unreadable for the whole grace cannot go on)
        this.o.logger.error(`coordinator silent for ${(silentMs / 1000).toFixed(1)} s (launch.coordinator_grace_s = ${config.launch.coordinator_grace_s}); nobody adopted this rank; exiting`);
        this.finish(EXIT.orphaned);
      } else if (!warned) {
        warned = true;
        this.o.logger.warn(
          `coordinator silent for ${(silentMs / 1000).toFixed(1)} s; keeping this rank's state for up to launch.coordinator_grace_s = ${config.launch.coordinator_grace_s} s: ` +
            `bun run coordinator --resume ${this.job} adopts it`,
        );
      }
    };
    const t = setInterval(() => {
      if (!connected || confirming || Date.now() - this.lastSeen <= deadMs) return;
      confirming = true;
      void judge().finally(() => (confirming = false));
    }, Math.max(100, Math.min(deadMs, graceMs) / 4));
    return () => {
      w.stop();
      clearInterval(t);
    };
  }
}
