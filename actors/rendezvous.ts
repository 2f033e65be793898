// Rendezvous: workers register their data-plane address; when every rank is in, each gets the
// table, the per-job secret and the epoch in its reply. Refusals name what was wrong: a foreign
// job, a rank outside the world, a stale epoch, a rank already held by another process.
import type { Msg } from "@nats-io/transport-node";
import { PROTOCOL_VERSION, decodeToCoordinator, encode, type PeerInfo, type ToCoordinator, type ToWorker } from "./protocol.ts";

type Register = Extract<ToCoordinator, { kind: "register" }>;

export class Rendezvous {
  private joined = new Map<number, { reg: Register; msg: Msg }>();
  private complete = false;
  private resolveAll!: (peers: PeerInfo[]) => void;
  /** resolves with the table (rank order) once every rank registered. */
  readonly all = new Promise<PeerInfo[]>((r) => (this.resolveAll = r));

  constructor(
    private readonly job: string,
    private readonly worldSize: number,
    private readonly epoch: () => number,
    private readonly welcome: (rank: number, peers: PeerInfo[]) => ToWorker,
    /** pid a locally spawned rank must have (others are refused), if any. */
    private readonly localPid: (rank: number) => number | undefined,
    private readonly log: (msg: string, fields: object) => void,
  ) {}

  get missing(): number[] {
    return [...Array(this.worldSize).keys()].filter((r) => !this.joined.has(r));
  }

  /** Handle one register request (NATS request/reply). */
  onRequest(msg: Msg): void {
    let reg: ToCoordinator;
    try {
      reg = decodeToCoordinator(msg.data);
    } catch (e) {
      return this.refuse(msg, -1, `bad register message: ${(e as Error).message}`);
    }
    if (reg.kind !== "register") return this.refuse(msg, -1, `expected a register message, got ${reg.kind}`);
    const why = this.check(reg);
    if (why) return this.refuse(msg, reg.rank, why);
    this.joined.set(reg.rank, { reg, msg });
    this.log("rank registered", { rank: reg.rank, host: reg.host, pid: reg.pid, addr: reg.addr });
    if (this.complete) {
      // a re-register from the same process (its welcome was lost, e.g. NATS restarted)
      msg.respond(encode(this.welcome(reg.rank, this.table())));
    } else if (this.joined.size === this.worldSize) {
      this.complete = true;
      const peers = this.table();
      for (const [rank, j] of this.joined) j.msg.respond(encode(this.welcome(rank, peers)));
      this.resolveAll(peers);
    }
  }

  private check(reg: Register): string | null {
    if (reg.job !== this.job) return `job ${reg.job} is not this coordinator's job ${this.job}`;
    if (!Number.isInteger(reg.rank) || reg.rank < 0 || reg.rank >= this.worldSize)
      return `rank ${reg.rank} is outside 0..${this.worldSize - 1} (launch.world_size = ${this.worldSize})`;
    if (reg.epoch !== 0 && reg.epoch !== this.epoch()) return `stale epoch ${reg.epoch}: the job is at epoch ${this.epoch()}`;
    const local = this.localPid(reg.rank);
    if (local !== undefined && local !== reg.pid) return `rank ${reg.rank} is a local worker of the coordinator (pid ${local}), not pid ${reg.pid}`;
    const prev = this.joined.get(reg.rank);
    if (prev && (prev.reg.pid !== reg.pid || prev.reg.host !== reg.host))
      return `rank ${reg.rank} already joined from pid ${prev.reg.pid} on ${prev.reg.host}`;
    return null;
  }

  private refuse(msg: Msg, rank: number, reason: string): void {
    this.log("register refused", { rank, reason });
    const r: ToWorker = { v: PROTOCOL_VERSION, kind: "refused", job: this.job, rank, reason };
    msg.respond(encode(r));
  }

  private table(): PeerInfo[] {
    return [...this.joined.values()]
      .map(({ reg }) => ({ rank: reg.rank, host: reg.host, pid: reg.pid, addr: reg.addr }))
      .sort((a, b) => a.rank - b.rank);
  }
}
