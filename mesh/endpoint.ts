// The transport worker's network side: one listener (bound only to the configured address,
// opened before the rendezvous table is known), the job config (table, secret, job, epoch),
// and the HMAC handshake that turns a TCP connection into a group link.
// Per group and pair, the member with the lower global rank dials the higher one.
import { randomBytes } from "node:crypto";
import { Conn } from "./conn.ts";
import { Group } from "./group.ts";
import { Reactor, type NetSocket } from "./reactor.ts";
import {
  encodeHs, handshakeMac, HsType, macEqual, type Auth, type Challenge, type Hello, type Reject,
} from "./wire.ts";

export interface JobConfig {
  rank: number;
  worldSize: number;
  table: readonly string[]; // table[r] = "host:port" of rank r's listener
  secret: string; // per-job, from the coordinator
  jobId: string;
  epoch: number; // bumped by the coordinator on every restart: stale ranks are refused
  deadlineMs: number; // every receive and every handshake
  maxFrameBytes: number; // payload limit, checked before allocation
}

export type Log = (level: "debug" | "info" | "warn" | "error", msg: string, obj?: object) => void;

/** What a refused peer is told: nothing about the job (its id, epoch or ranks); the reason is in our log. */
export const REFUSED = "refused (the reason is in the listening rank's log)";

/** Seconds within which repeats of one kind of refusal from one address are counted, not logged. */
const REFUSAL_WINDOW_MS = 10_000;

/**
 * Logs each kind of refusal from each address once per window, with the count of repeats since the
 * last line: a flood of bad peers costs a line per window, and nothing goes unseen.
 */
export class RefusalLog {
  private seen = new Map<string, { at: number; repeats: number }>();
  constructor(private log: Log, private windowMs = REFUSAL_WINDOW_MS, private now = () => Date.now()) {}

  refused(remote: string, what: string, reason: string): void {
    const host = remote.replace(/:\d+$/, "");
    const key = `${host}|${what}|${reason.replace(/\d+/g, "#")}`; // the kind, not each nonce or port
    const t = this.now();
    const e = this.seen.get(key);
    if (e && t - e.at < this.windowMs) {
      e.repeats++;
      return;
    }
    const more = e && e.repeats > 0 ? ` (and ${e.repeats} more like it from ${host} in the last ${Math.round((t - e.at) / 1000)} s)` : "";
    this.seen.set(key, { at: t, repeats: 0 });
    if (this.seen.size > 1024) this.seen.delete(this.seen.keys().next().value!); // bounded under a spray of addresses
    this.log("warn", `mesh: ${what} from ${remote}: ${reason}${more}`, { remote });
  }
}

export class Endpoint {
  cfg: JobConfig | null = null;
  private configured: Promise<void>;
  private setConfigured!: () => void;
  private groups = new Map<string, Group>();
  private groupWaiters = new Map<string, (() => void)[]>();
  private all = new Set<Conn>();
  private refusals: RefusalLog;

  private constructor(private reactor: Reactor, readonly port: number, readonly host: string, private log: Log) {
    this.configured = new Promise((r) => (this.setConfigured = r));
    this.refusals = new RefusalLog(log);
  }

  /** The eventfd that wakes this transport's poll loop (written by the compute thread). */
  get wakeFd(): number {
    return this.reactor.wakeFd;
  }

  /** Bind `host` on `ports` (0 = any free port; else the first free one of the list). */
  static async listen(host: string, ports: readonly number[], maxHsMs: number, log: Log): Promise<Endpoint> {
    const reactor = new Reactor();
    let ep: Endpoint | null = null;
    try {
      const port = await reactor.listen(host, ports, (s) => (ep ? ep.accepted(s, maxHsMs) : s.destroy()));
      ep = new Endpoint(reactor, port, host, log);
      return ep;
    } catch (e) {
      await reactor.stop();
      throw e;
    }
  }

  configure(cfg: JobConfig): void {
    if (this.cfg) throw new Error("mesh: endpoint already configured");
    if (cfg.table.length !== cfg.worldSize) {
      throw new Error(`mesh: rendezvous table has ${cfg.table.length} entries for world_size ${cfg.worldSize}`);
    }
    this.cfg = cfg;
    this.setConfigured();
  }

  /** Collective: every member calls it with the same name and ranks. */
  async group(name: string, ranks: readonly number[]): Promise<Group> {
    const cfg = this.cfg!;
    if (this.groups.has(name)) throw new Error(`mesh: group ${name} exists already`);
    for (const r of ranks) {
      if (!Number.isInteger(r) || r < 0 || r >= cfg.worldSize) throw new Error(`group ${name}: rank ${r} outside [0, ${cfg.worldSize})`);
    }
    const g = new Group(name, ranks, cfg.rank, cfg.deadlineMs);
    this.groups.set(name, g);
    for (const w of this.groupWaiters.get(name)?.splice(0) ?? []) w();
    for (const peer of ranks) if (peer > cfg.rank) this.dial(g, peer);
    await g.ready();
    return g;
  }

  /** Stop accepting, close every link once its queued frames reached the kernel (bounded). */
  async close(): Promise<void> {
    this.reactor.unlisten();
    for (const g of this.groups.values()) g.close();
    for (const c of this.all) c.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([...this.all].map((c) => c.flushed())),
      new Promise((r) => (timer = setTimeout(r, this.cfg?.deadlineMs ?? 1000))),
    ]);
    clearTimeout(timer);
    await this.reactor.stop();
  }

  // ---- acceptor side ----

  private accepted(s: NetSocket, maxHsMs: number): void {
    const c = new Conn(s, 0, `unauthenticated peer ${s.remoteAddress}`);
    s.link = c;
    this.all.add(c);
    let hello: Hello | null = null;
    let nonce = "";
    let state: "hello" | "wait" | "auth" | "done" = "hello";
    const reject = (reason: string): void => {
      this.refusals.refused(s.remoteAddress, "handshake refused", reason);
      c.send(encodeHs(HsType.Reject, { reason: REFUSED } satisfies Reject));
      c.close();
      state = "done";
    };
    const timer = setTimeout(() => {
      if (state !== "done") reject(`handshake not completed within ${maxHsMs} ms`);
    }, maxHsMs);
    c.onFail = (e) => {
      clearTimeout(timer);
      if (state !== "done") this.refusals.refused(s.remoteAddress, "handshake dropped", e.message);
      state = "done";
    };
    c.onClosed = () => {
      clearTimeout(timer);
      state = "done";
    };
    c.onHs = (type, body) => {
      if (state === "hello" && type === HsType.Hello) {
        hello = body as Hello;
        state = "wait";
        void this.onHello(hello).then((why) => {
          if (state !== "wait") return;
          if (why) return reject(why);
          nonce = randomBytes(16).toString("hex");
          const mac = handshakeMac(this.cfg!.secret, "acceptor", hello!, nonce);
          c.send(encodeHs(HsType.Challenge, { nonce, mac } satisfies Challenge));
          state = "auth";
        });
      } else if (state === "auth" && type === HsType.Auth) {
        const mac = (body as Auth)?.mac;
        const h = hello!;
        if (typeof mac !== "string" || !macEqual(mac, handshakeMac(this.cfg!.secret, "dialer", h, nonce))) {
          return reject(`rank ${h.from} failed the handshake MAC (wrong secret?)`);
        }
        const g = this.groups.get(h.group)!;
        c.label = `rank ${h.from}`;
        c.maxLen = this.cfg!.maxFrameBytes;
        if (!g.attach(h.from, c)) return reject(`rank ${h.from} already linked in group ${h.group}`);
        clearTimeout(timer);
        state = "done";
        c.send(encodeHs(HsType.Ok, {}));
        c.toFrames();
      } else {
        reject(`unexpected handshake message type ${type} in state ${state}`);
      }
    };
  }

  /** Why this Hello is refused, or null once its group exists here. */
  private async onHello(h: Hello): Promise<string | null> {
    if (typeof h !== "object" || h === null) return "Hello is not an object";
    await this.configured; // a peer may dial before our table arrived: hold it until then
    const cfg = this.cfg!;
    if (h.job !== cfg.jobId) return `job ${JSON.stringify(h.job)}, expected ${JSON.stringify(cfg.jobId)}`;
    if (h.epoch !== cfg.epoch) return `epoch ${h.epoch}, expected ${cfg.epoch} (stale or future rank)`;
    if (h.to !== cfg.rank) return `Hello addressed to rank ${h.to}, this is rank ${cfg.rank}`;
    if (!Number.isInteger(h.from) || h.from < 0 || h.from >= cfg.rank) {
      return `Hello from rank ${h.from}: only ranks below ${cfg.rank} dial rank ${cfg.rank}`;
    }
    if (typeof h.group !== "string" || typeof h.nonce !== "string" || h.nonce.length !== 32) return "malformed Hello";
    if (!this.groups.has(h.group)) {
      // The dialer created the group first; wait for ours (the handshake timer bounds this).
      await new Promise<void>((r) => {
        const list = this.groupWaiters.get(h.group) ?? [];
        list.push(r);
        this.groupWaiters.set(h.group, list);
      });
    }
    if (!this.groups.get(h.group)!.ranks.includes(h.from)) return `rank ${h.from} is not in group ${h.group}`;
    return null;
  }

  // ---- dialer side ----

  private dial(g: Group, peer: number): void {
    const cfg = this.cfg!;
    const [host, portText] = splitHostPort(cfg.table[peer]);
    const hello: Hello = {
      job: cfg.jobId, epoch: cfg.epoch, group: g.name, from: cfg.rank, to: peer, nonce: randomBytes(16).toString("hex"),
    };
    const fail = (why: string): void => g.fail(new Error(`link to rank ${peer} (${cfg.table[peer]}): ${why}`), null);
    this.reactor.connect(host, Number(portText)).then(
      (s) => {
        const c = new Conn(s, cfg.maxFrameBytes, `rank ${peer}`);
        s.link = c;
        this.all.add(c);
        let state: "challenge" | "ok" | "done" = "challenge";
        c.onFail = (e) => fail(e.message);
        c.onClosed = () => {
          if (state !== "done") fail("closed during the handshake");
        };
        c.onHs = (type, body) => {
          if (state === "challenge" && type === HsType.Challenge) {
            const ch = body as Challenge;
            if (typeof ch?.mac !== "string" || !macEqual(ch.mac, handshakeMac(cfg.secret, "acceptor", hello, String(ch.nonce)))) {
              c.close();
              return fail("acceptor failed the handshake MAC (wrong secret or impostor)");
            }
            c.send(encodeHs(HsType.Auth, { mac: handshakeMac(cfg.secret, "dialer", hello, ch.nonce) } satisfies Auth));
            state = "ok";
          } else if (state === "ok" && type === HsType.Ok) {
            state = "done";
            c.toFrames();
            if (!g.attach(peer, c)) c.close();
          } else if (type === HsType.Reject) {
            c.close();
            fail(`handshake rejected: ${(body as Reject)?.reason}`);
          } else {
            c.close();
            fail(`unexpected handshake message type ${type}`);
          }
        };
        c.send(encodeHs(HsType.Hello, hello));
      },
      (e: Error) => fail(`cannot connect: ${e.message}`),
    );
  }
}

export function splitHostPort(addr: string): [string, string] {
  const i = addr.lastIndexOf(":");
  if (i <= 0) throw new Error(`mesh: address ${JSON.stringify(addr)} is not host:port`);
  return [addr.slice(0, i).replace(/^\[|\]$/g, ""), addr.slice(i + 1)];
}
