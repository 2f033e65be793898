// A process group inside the transport worker: one authenticated link to every other member
// (the ring uses the neighbours' links, all-to-all uses all of them), an op sequence number,
// and a failure state. Ops on one group run one at a time in call order; groups run
// concurrently. The first failure (bad frame, peer abort, receive deadline, a receive from
// a peer that closed) fails the group: pending receives reject, an
// abort frame naming the cause goes to every live peer (so ranks far from a dead peer fail
// at once, not at their deadline), and later ops fail immediately with the same error.
import type { Conn, Expect, Frame } from "./conn.ts";
import { encodeFrame, Op } from "./wire.ts";

export class Group {
  /** links[i]: link to member i (null for self, until attached). */
  readonly links: (Conn | null)[];
  readonly me: number; // this rank's index in `ranks`
  failed: Error | null = null;
  private nextSeq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private readyWaiters: (() => void)[] = [];
  private current: string | null = null; // "all_reduce seq 3" while an op runs

  constructor(
    readonly name: string,
    readonly ranks: readonly number[], // global ranks; ring order is this order
    readonly rank: number, // this process's global rank
    readonly deadlineMs: number,
  ) {
    if (new Set(ranks).size !== ranks.length) throw new Error(`group ${name}: repeated rank in [${ranks.join(", ")}]`);
    this.me = ranks.indexOf(rank);
    if (this.me < 0) throw new Error(`group ${name}: rank ${rank} is not a member of [${ranks.join(", ")}]`);
    this.links = ranks.map(() => null);
  }

  get size(): number {
    return this.ranks.length;
  }

  /** Member indices still without a link. */
  missing(): number[] {
    return this.ranks.filter((_, i) => i !== this.me && this.links[i] === null);
  }

  /** Install the authenticated link to global rank `peer`; false if that slot is taken. */
  attach(peer: number, c: Conn): boolean {
    const i = this.ranks.indexOf(peer);
    if (i < 0 || i === this.me || this.links[i] !== null) return false;
    this.links[i] = c;
    c.onFail = (e, byPeer) => this.fail(e, byPeer ? c : null);
    if (this.failed) c.abort(this.failed, this.abortFrame(this.failed));
    if (this.missing().length === 0) for (const w of this.readyWaiters.splice(0)) w();
    return true;
  }

  /** Resolves when every link is attached, rejects after `deadlineMs`. */
  ready(): Promise<void> {
    if (this.missing().length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`group ${this.name}: no authenticated link from rank(s) ${this.missing().join(", ")} ` +
          `within ${this.deadlineMs} ms`));
      }, this.deadlineMs);
      this.readyWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Run `body(seq)` after every earlier op of this group; errors fail the whole group. */
  run<T>(what: string, body: (seq: number) => Promise<T>): Promise<T> {
    const seq = this.nextSeq++;
    const p = this.tail.then(async () => {
      if (this.failed) {
        throw new Error(`rank ${this.rank} group ${this.name}: ${what} seq ${seq}: group failed before: ${this.failed.message}`);
      }
      this.current = `${what} seq ${seq}`;
      try {
        const res = await body(seq);
        // Frames may still point into the caller's buffers (zero-copy sends): hand them back
        // only once the kernel has every byte.
        await this.flushed();
        // A peer that closed after taking all it needed from us is not a failure of this op;
        // one that closed with our frames still queued is.
        const lost = this.links.findIndex((c) => c?.dropped);
        if (lost >= 0) throw this.failed ?? new Error(`frames to rank ${this.ranks[lost]} were never sent`);
        return res;
      } catch (e) {
        this.fail(e as Error, null);
        throw this.failed!;
      } finally {
        this.current = null;
      }
    });
    this.tail = p.catch(() => {});
    return p;
  }

  /** Every link's queued bytes are in the kernel; a peer that stops reading fails the deadline. */
  private flushed(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const who = this.links.flatMap((c, i) => (c && c.pendingBytes > 0 ? [this.ranks[i]] : []));
        reject(new Error(`rank(s) ${who.join(", ")} did not take our frames within ${this.deadlineMs} ms`));
      }, this.deadlineMs);
    });
    return Promise.race([Promise.all(this.links.map((c) => c?.flushed())).then(() => {}), stuck]).finally(() => clearTimeout(timer));
  }

  send(i: number, bytes: Uint8Array, done?: () => void, prepare?: () => void): void {
    this.links[i]!.send(bytes, done, prepare);
  }

  /** Return a consumed received frame from member i's link to its buffer pool. */
  release(i: number, f: Frame): void {
    this.links[i]?.release(f);
  }

  /** The next frame from member i; `lazy`: the caller checks its payload CRC (Conn.recv). */
  recv(i: number, e: Expect, lazy = false): Promise<Frame> {
    if (this.failed) return Promise.reject(this.failed);
    return this.links[i]!.recv(e, this.deadlineMs, lazy);
  }

  /** Fail member i's link (and so the group) with `msg`, naming the peer. */
  failLink(i: number, msg: string): Error {
    const e = new Error(`${this.links[i]!.label}: ${msg}`);
    this.links[i]!.fail(e, false);
    return e;
  }

  /** Posted receive from member i straight into `dst`; resolves with the payload CRC. */
  recvInto(i: number, e: Expect, dst: Uint8Array): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    return this.links[i]!.recvInto(e, dst, this.deadlineMs);
  }

  /** Fail the group once; tell every other live peer why. `from`: the link that aborted us. */
  fail(e: Error, from: Conn | null): void {
    if (this.failed) return;
    // Name this rank, the group and the op in flight: this text is what every rank reports.
    this.failed = new Error(`rank ${this.rank} group ${this.name}: ${this.current ?? "between ops"}: ${e.message}`);
    const frame = this.abortFrame(this.failed);
    for (const c of this.links) if (c && c !== from) c.abort(this.failed, frame);
  }

  /** Orderly shutdown: no abort frames (peers may still be reading our last frames). */
  close(): void {
    this.failed ??= new Error(`rank ${this.rank} group ${this.name}: closed`);
    for (const c of this.links) c?.close();
  }

  private abortFrame(e: Error): Uint8Array {
    const msg = new TextEncoder().encode(e.message.slice(0, 4000));
    return encodeFrame({ op: Op.Abort, step: 0, seq: 0, chunk: 0, total: msg.length }, msg);
  }
}
