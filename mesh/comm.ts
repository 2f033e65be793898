// The compute thread's handle on the data plane. Usage (rendezvous order):
//   const comm = await Comm.listen({ rank, host: "10.0.0.5", portRange: [29500, 29600] });
//   report comm.address to the coordinator; receive the table and secret; then
//   await comm.start({ worldSize, table, secret, jobId, epoch, deadlineMs });
//   const fsdp = await comm.group(mesh.groupOf(rank, ["dp_shard", "ulysses"]), "fsdp");
//   await fsdp.allGather(flatParams, myShard, counts);       // SharedArrayBuffer-backed
// Every method posts one request to the transport worker and awaits its reply: that await is
// where the compute thread waits on peers. Buffers belong to the transport until it resolves.
import { offsetsOf } from "./collectives.ts";
import type { JobConfig } from "./endpoint.ts";
import { wake } from "./net.ts";
import type { OpArgs, Ref, Reply, Request } from "./protocol.ts";

type DoneReply = Extract<Reply, { t: "done" }>;
import type { ReduceKind } from "./wire.ts";

/** pino-compatible: logger.warn(obj, msg). */
export interface MeshLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ListenOptions {
  rank: number;
  host: string; // the only address the listener binds to
  port?: number; // 0 (default): any free port
  portRange?: [number, number]; // or the first free port of [lo, hi]
  handshakeMs?: number; // an unauthenticated connection is dropped after this (default 5000)
  logger?: MeshLogger;
}

export interface StartOptions {
  worldSize: number;
  table: string[]; // "host:port" per rank, from the rendezvous
  secret: string;
  jobId: string;
  epoch: number;
  deadlineMs?: number; // every receive (default 30000)
  maxFrameBytes?: number; // default 4 MiB; must be >= chunkBytes
  chunkBytes?: number; // payload per frame (default 512 KiB)
}

type Typed = Float32Array | Int32Array | Uint32Array | Uint16Array | Int16Array | Uint8Array | Int8Array | Float64Array;

export function sharedF32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(n * 4));
}

export class Comm {
  private worker: Worker;
  private nextId = 1;
  private pending = new Map<number, { resolve: (r: DoneReply) => void; reject: (e: Error) => void }>();
  private wakeFd = -1; // the transport's poll loop sleeps in poll(); this eventfd wakes it
  private cfg: JobConfig | null = null;
  private port = 0;
  private closed = false;
  // SharedArrayBuffers the worker holds, by number (protocol.ts, Ref): given with the first
  // op that uses one, dropped there with the first op after this thread's buffer is garbage.
  private bufIds = new WeakMap<SharedArrayBuffer, number>();
  private nextBuf = 1;
  private adopt: [number, SharedArrayBuffer][] = [];
  private forget: number[] = [];
  private dropped = new FinalizationRegistry<number>((id) => this.forget.push(id));

  private constructor(readonly rank: number, readonly host: string, private logger?: MeshLogger) {
    this.worker = new Worker(new URL("./transport_worker.ts", import.meta.url).href);
    this.worker.onmessage = (ev: MessageEvent<Reply>) => this.onReply(ev.data);
    this.worker.onerror = (ev) => {
      for (const p of this.pending.values()) p.reject(new Error(`mesh: transport worker crashed: ${ev.message}`));
      this.pending.clear();
    };
  }

  /** Open the listener now; the table can come later (rendezvous reports `address` first). */
  static async listen(o: ListenOptions): Promise<Comm> {
    const c = new Comm(o.rank, o.host, o.logger);
    const ports = o.portRange ? range(o.portRange[0], o.portRange[1]) : [o.port ?? 0];
    try {
      const r = await c.call({ t: "listen", id: 0, host: o.host, ports, handshakeMs: o.handshakeMs ?? 5000 });
      c.port = r.port!;
      c.wakeFd = r.wakeFd!;
    } catch (e) {
      c.worker.terminate();
      throw e;
    }
    return c;
  }

  /** listen + start in one go, when the table is known up front. */
  static async start(o: ListenOptions & StartOptions): Promise<Comm> {
    const c = await Comm.listen(o);
    await c.start(o);
    return c;
  }

  /** "host:port" of this rank's listener, for the rendezvous table. */
  get address(): string {
    return `${this.host.includes(":") ? `[${this.host}]` : this.host}:${this.port}`;
  }

  async start(o: StartOptions): Promise<void> {
    const chunkBytes = o.chunkBytes ?? 512 << 10;
    const maxFrameBytes = o.maxFrameBytes ?? 4 << 20;
    if (chunkBytes % 4 !== 0 || chunkBytes <= 0 || chunkBytes > maxFrameBytes) {
      throw new Error(`mesh: chunkBytes ${chunkBytes} must be a positive multiple of 4 and <= maxFrameBytes ${maxFrameBytes}`);
    }
    if (o.table[this.rank] !== undefined && o.table[this.rank] !== this.address) {
      this.logger?.warn({ rank: this.rank, table: o.table[this.rank], listener: this.address }, "mesh: table entry differs from listener address");
    }
    this.cfg = {
      rank: this.rank, worldSize: o.worldSize, table: o.table, secret: o.secret, jobId: o.jobId, epoch: o.epoch,
      deadlineMs: o.deadlineMs ?? 30000, maxFrameBytes,
    };
    await this.call({ t: "configure", id: 0, cfg: this.cfg, chunkBytes });
  }

  /** Collective over `ranks` (every member calls it, same order, same name). Ring order = `ranks`. */
  async group(ranks: readonly number[], name = `g@${ranks.join(".")}`): Promise<CommGroup> {
    if (!this.cfg) throw new Error("mesh: group() before start()");
    await this.call({ t: "group", id: 0, name, ranks: [...ranks] });
    return new CommGroup(this, name, ranks, ranks.indexOf(this.rank));
  }

  /** The group of every rank. */
  world(): Promise<CommGroup> {
    return this.group([...Array(this.cfg!.worldSize).keys()], "world");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.call({ t: "close", id: 0 }).catch(() => {});
    this.worker.terminate();
  }

  /** @internal `a`'s bytes as a Ref for the next op; `what` names it if it is not shared memory. */
  ref(a: Typed, what: string): Ref {
    if (!(a.buffer instanceof SharedArrayBuffer)) {
      throw new Error(`mesh: ${what} must be backed by a SharedArrayBuffer (see sharedF32), got ${a.buffer.constructor.name}`);
    }
    const sab = a.buffer;
    let id = this.bufIds.get(sab);
    if (id === undefined) {
      id = this.nextBuf++;
      this.bufIds.set(sab, id);
      this.dropped.register(sab, id);
      this.adopt.push([id, sab]);
    }
    return { buf: id, off: a.byteOffset, len: a.byteLength };
  }

  /** Profiling: told of each collective once it is done (start and end in performance.now() ms). */
  onOp: ((e: { group: string; kind: OpArgs["kind"]; bytes: number; t0: number; t1: number }) => void) | null = null;

  /** @internal One collective: its buffers' Refs are in `args` (see ref). */
  op(group: string, args: OpArgs): Promise<void> {
    const m: Request = { t: "op", id: 0, group, args, adopt: this.adopt, forget: this.forget };
    this.adopt = [];
    this.forget = [];
    const seen = this.onOp;
    if (!seen) return this.call(m).then(() => {});
    const t0 = performance.now();
    return this.call(m).then(() => seen({ group, kind: args.kind, bytes: opBytes(args), t0, t1: performance.now() }));
  }

  /** @internal */
  call(m: Request): Promise<DoneReply> {
    if (this.closed && m.t !== "close") return Promise.reject(new Error("mesh: comm closed"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...m, id });
      // The message is queued: let the worker see it now (not for close: the worker closes
      // the eventfd then, and its number may be reused at once).
      if (this.wakeFd >= 0 && m.t !== "close") wake(this.wakeFd);
    });
  }

  private onReply(m: Reply): void {
    if (m.t === "log") {
      this.logger?.[m.level]({ rank: this.rank, ...m.obj }, m.msg);
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.t === "done") p.resolve(m);
    else p.reject(new Error(m.message));
  }
}

export class CommGroup {
  constructor(
    private comm: Comm,
    readonly name: string,
    readonly ranks: readonly number[],
    readonly rank: number, // this process's index in `ranks`
  ) {}

  get size(): number {
    return this.ranks.length;
  }

  private op(args: OpArgs): Promise<void> {
    return this.comm.op(this.name, args);
  }

  /** buf (N) <- reduce of every member's buf (N), in place; any N. */
  allReduce(buf: Float32Array, reduce: ReduceKind = "sum"): Promise<void> {
    return this.op({ kind: "all_reduce", buf: this.comm.ref(buf, "all_reduce buffer"), reduce });
  }

  /**
   * out (counts[me]) <- reduce over members of inp[off[me], off[me+1]), inp (sum counts).
   * counts: elements per member (default: inp.length / size, which must divide). `inp` is
   * scratch: afterwards other members' segments of it hold partial sums (the ring forwards them
   * from there, so no frame buffers pile up).
   */
  reduceScatter(out: Float32Array, inp: Float32Array, reduce: ReduceKind = "sum", counts?: readonly number[]): Promise<void> {
    const o = this.comm.ref(out, "reduce_scatter output");
    const i = this.comm.ref(inp, "reduce_scatter input");
    const off = offsetsOf(counts ?? this.even(inp.length, "reduce_scatter input"));
    this.checkLayout("reduce_scatter", off, inp.length, out.length);
    return this.op({ kind: "reduce_scatter", out: o, inp: i, off, reduce });
  }

  /**
   * out (sum counts) <- every member's shard; this member's `inp` (counts[me]) lands at
   * out[off[me]). `inp` may be that very view of `out` (no copy). counts in elements of out.
   */
  allGather(out: Typed, inp: Typed, counts?: readonly number[]): Promise<void> {
    const ob = this.comm.ref(out, "all_gather output");
    const ib = this.comm.ref(inp, "all_gather input");
    const el = out.BYTES_PER_ELEMENT;
    const off = offsetsOf(counts ?? this.even(out.length, "all_gather output"));
    this.checkLayout("all_gather", off, out.length, inp.length * inp.BYTES_PER_ELEMENT / el);
    const inPlace = ib.buf === ob.buf && ib.off === ob.off + off[this.rank] * el;
    return this.op({ kind: "all_gather", out: ob, inp: inPlace ? null : ib, off: off.map((o) => o * el) });
  }

  /** buf <- root's buf (root: index in this group). Any typed array. */
  broadcast(buf: Typed, root: number): Promise<void> {
    if (!Number.isInteger(root) || root < 0 || root >= this.size) throw new Error(`mesh: broadcast root ${root} outside group of ${this.size}`);
    return this.op({ kind: "broadcast", buf: this.comm.ref(buf, "broadcast buffer"), root });
  }

  /**
   * out <- all-to-all: inp's segment i (sendCounts[i] elements) goes to member i, member i's
   * segment for us lands at out segment i (recvCounts[i]). Counts in elements; same type.
   */
  allToAll(out: Typed, inp: Typed, sendCounts: readonly number[], recvCounts: readonly number[]): Promise<void> {
    const el = out.BYTES_PER_ELEMENT;
    if (inp.BYTES_PER_ELEMENT !== el) throw new Error("mesh: all_to_all input and output element sizes differ");
    const sOff = offsetsOf(sendCounts);
    const rOff = offsetsOf(recvCounts);
    this.checkLayout("all_to_all send", sOff, inp.length, null);
    this.checkLayout("all_to_all recv", rOff, out.length, null);
    if (sendCounts[this.rank] !== recvCounts[this.rank]) {
      throw new Error(`mesh: all_to_all sends ${sendCounts[this.rank]} elements to itself but expects ${recvCounts[this.rank]}`);
    }
    return this.op({
      kind: "all_to_all", out: this.comm.ref(out, "all_to_all output"), recvOff: rOff.map((o) => o * el),
      inp: this.comm.ref(inp, "all_to_all input"), sendOff: sOff.map((o) => o * el),
    });
  }

  barrier(): Promise<void> {
    return this.op({ kind: "barrier" });
  }

  private even(n: number, what: string): number[] {
    if (n % this.size !== 0) throw new Error(`mesh: ${what} of ${n} elements does not divide by group size ${this.size}: pass counts`);
    return Array(this.size).fill(n / this.size);
  }

  private checkLayout(what: string, off: number[], full: number, mine: number | null): void {
    if (off.length !== this.size + 1) throw new Error(`mesh: ${what}: ${off.length - 1} counts for group of ${this.size}`);
    if (off.some((o, i) => i > 0 && !(o >= off[i - 1]) )) throw new Error(`mesh: ${what}: counts must be non-negative integers`);
    if (off[this.size] !== full) throw new Error(`mesh: ${what}: counts sum to ${off[this.size]}, buffer has ${full} elements`);
    const want = off[this.rank + 1] - off[this.rank];
    if (mine !== null && mine !== want) throw new Error(`mesh: ${what}: shard has ${mine} elements, counts[${this.rank}] = ${want}`);
  }
}

function range(lo: number, hi: number): number[] {
  return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
}

/** The payload of one collective on this rank: its largest buffer (bytes). */
function opBytes(a: OpArgs): number {
  switch (a.kind) {
    case "all_reduce":
    case "broadcast":
      return a.buf.len;
    case "reduce_scatter":
      return a.inp.len;
    case "all_gather":
    case "all_to_all":
      return Math.max(a.out.len, a.inp?.len ?? 0);
    case "barrier":
      return 0;
  }
}
