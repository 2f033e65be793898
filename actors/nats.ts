// NATS connection and the job record in JetStream KV (bucket `veomni_jobs`).
// Keys: `<job>.config` (resolved config, JSON), `<job>.state` (JobState), `<job>.ranks.<r>`
// (RankRecord). Values are JSON so `nats kv get veomni_jobs <job>.state` prints them readably.
// Every write is a compare-and-set on the revision the writer last saw: a stale writer (an old
// coordinator, a worker of an earlier epoch) fails instead of overwriting newer state.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";

export const BUCKET = "veomni_jobs";

export type JobPhase = "rendezvous" | "running" | "done" | "failed" | "stopped";

export interface JobState {
  job: string;
  phase: JobPhase;
  /** generation number: bumps on every restart; fences out stale workers. */
  epoch: number;
  world_size: number;
  /** last completed optimizer step (1-based count of finished steps). */
  step: number;
  max_steps: number;
  loss: number | null;
  tokens_per_s: number | null;
  /** output_dir-relative path of the newest committed checkpoint (checkpoint issue). */
  last_checkpoint: string | null;
  error: string | null;
  coordinator: { host: string; pid: number };
  /** step implementation the workers build: "train" (the model) or "toy" (runtime tests). */
  runner: string;
  output_dir: string;
  updated_at: string;
  /** set while a `coordinator --resume` adopts the live ranks of this older epoch: they wait for its
   *  `adopt` command instead of taking the newer `epoch` for a fence (actors/adopt.ts). */
  adopt_from?: number;
}

export interface RankRecord {
  rank: number;
  epoch: number;
  host: string;
  pid: number;
  /** data-plane address "host:port". */
  addr: string;
  status: "joined" | "running" | "done" | "failed";
  /** last finished step on this rank. */
  step: number;
  rss_mb: number;
  /** wall-clock ms of the last heartbeat (Date.now()). */
  heartbeat_ms: number;
  heartbeat_at: string;
}

export const keys = {
  config: (job: string) => `${job}.config`,
  state: (job: string) => `${job}.state`,
  rank: (job: string, r: number) => `${job}.ranks.${r}`,
};

export interface NatsOptions {
  /** one URL, or a comma-separated list of a cluster's servers (the client fails over among them). */
  url: string;
  token?: string;
  name: string;
}

/** Connect with retry-forever reconnects (PLATFORM.md: the default gives up after ~10 tries). */
export async function connectNats(o: NatsOptions): Promise<NatsConnection> {
  return connect({
    servers: o.url.split(",").map((u) => u.trim()).filter(Boolean),
    token: o.token,
    name: o.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 2000,
    timeout: 5000,
  });
}

/**
 * Open (or create) the job bucket. On a clustered NATS (the server's INFO names a cluster) the
 * bucket is created with 3 replicas, so the job records survive the loss of one server; a single
 * server keeps 1. Whoever creates the bucket first decides; an existing bucket is used as it is.
 * Retried while a fresh cluster has not elected its JetStream leader yet.
 */
export async function openBucket(nc: NatsConnection): Promise<KV> {
  const replicas = nc.info?.cluster ? 3 : 1;
  // history 16: `nats kv history` shows the recent transitions of a job.
  const open = () =>
    new Kvm(nc).create(BUCKET, { history: 16, replicas }).catch((e: unknown) => {
      const msg = e instanceof Error ? e.message : String(e);
      if (/temporarily unavailable|no responders|503|timeout|insufficient resources|no suitable peers/i.test(msg)) throw e; // retried: a cluster still forming
      throw Object.assign(new Error(`KV bucket ${BUCKET} (${replicas} replica${replicas > 1 ? "s" : ""}): ${msg}`), { permanent: true });
    });
  const what = `open KV bucket ${BUCKET} with ${replicas} replica(s)`;
  const kv = await retrying(what, open, 30_000);
  if (replicas > 1) {
    // A replicated stream answers writes only once its replicas elected a leader (a fresh bucket
    // in a fresh cluster: a few seconds); until then a create times out.
    await retrying(what, async () => {
      const st = await withTimeout(kv.status(), OP_MS, `${BUCKET} status`);
      if (!st.streamInfo.cluster?.leader) throw new Error(`${BUCKET}: no stream leader yet (temporarily unavailable)`);
    }, 30_000);
  }
  return kv;
}

const enc = new TextEncoder();
export const toJson = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));

/**
 * Bound a NATS operation in time. A KV write issued while the client is disconnected can stay
 * pending until the connection closes (measured: it neither fails nor resolves on reconnect),
 * which would wedge whoever awaits it; the caller retries on its own schedule instead.
 */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  const timeout = new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what}: no answer from NATS in ${ms} ms`)), ms)));
  p.catch(() => {}); // a late rejection of the abandoned operation is not an error
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

const OP_MS = 2000;

/** A KV value this process owns, written only with CAS on the revision it last saw. */
export class CasRecord<T> {
  private revision = 0;
  constructor(readonly kv: KV, readonly key: string) {}

  /** Create the key; fails if it already exists (e.g. a job id already taken). */
  async create(value: T): Promise<void> {
    this.revision = await withTimeout(this.kv.create(this.key, toJson(value)), OP_MS, `create ${this.key}`);
  }

  /** Adopt the key's current revision (or create it) before CAS writes. */
  async adopt(value: T): Promise<void> {
    const e = await withTimeout(this.kv.get(this.key), OP_MS, `get ${this.key}`);
    if (e && e.operation === "PUT") this.revision = await withTimeout(this.kv.update(this.key, toJson(value), e.revision), OP_MS, `update ${this.key}`);
    else this.revision = await withTimeout(this.kv.create(this.key, toJson(value)), OP_MS, `create ${this.key}`);
  }

  /**
   * CAS write that survives a lost acknowledgement (the server applied our write, then NATS
   * restarted before the ack came back: our revision is then one behind our own write). On a
   * conflict the current value is read; if `owns` says it is still ours, adopt and write again.
   */
  async writeOwned(value: T, owns: (current: T) => boolean): Promise<void> {
    try {
      await this.write(value);
    } catch (e) {
      if (!/wrong last sequence/i.test(String(e))) throw e;
      const cur = await withTimeout(readJson<T>(this.kv, this.key), OP_MS, `get ${this.key}`);
      // permanent: another coordinator owns the job now (this one was taken over); retrying cannot help
      if (!cur || !owns(cur)) throw Object.assign(new Error(`${this.key}: written by another process since revision ${this.revision}: ${JSON.stringify(cur)}`), { permanent: true });
      await this.adopt(value);
    }
  }

  /** CAS write; throws a "wrong last sequence" error if someone else wrote since. */
  async write(value: T): Promise<void> {
    this.revision = await withTimeout(this.kv.update(this.key, toJson(value), this.revision), OP_MS, `update ${this.key}`);
  }
}

/** Retry `op` while NATS is disconnected or JetStream is not ready yet, up to `deadlineMs`. */
export async function retrying<T>(what: string, op: () => Promise<T>, deadlineMs = 30_000): Promise<T> {
  const t0 = Date.now();
  let wait = 50;
  for (;;) {
    try {
      return await op();
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      // A CAS conflict is a real error (another writer), not a transport hiccup.
      if (/wrong last sequence|key exists/i.test(msg) || (e as { permanent?: boolean }).permanent) throw e;
      if (Date.now() - t0 > deadlineMs) throw new Error(`${what}: still failing after ${deadlineMs} ms: ${msg}`);
      await Bun.sleep(wait); // backoff while the server is unreachable (not a test wait)
      wait = Math.min(wait * 2, 1000);
    }
  }
}

export async function readJson<T>(kv: KV, key: string): Promise<T | null> {
  const e = await kv.get(key);
  if (!e || e.operation !== "PUT" || e.length === 0) return null;
  return e.json<T>();
}
