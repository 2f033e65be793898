// One authenticated TCP link between two ranks of a group, on a native socket the reactor
// drives (mesh/reactor.ts), inside the transport worker. It says where the next received bytes
// go (handshake messages first, then frames), checks every header before allocating its
// payload, checks payload CRCs, queues frames until the collective asks for them, and keeps
// unsent bytes: the kernel may take part of a batch, the rest goes when the socket is writable.
import { DISCARD, type Link, type NetSocket } from "./reactor.ts";
import { crc32c } from "./crc32c.ts";
import {
  crcMismatch, FRAME_HEADER, HS_HEADER, Op, opName, readFrameHeader, readHsHeader, type FrameHeader, type HsType,
} from "./wire.ts";

const POOL_MAX = 32; // pooled frame buffers per link and length (32 x 512 KiB = 16 MiB)
// Frames a peer sends before this rank posts their receive wait in `queue`; past this many bytes
// the reactor stops reading the socket (wantsRead) until a receive takes some, so TCP holds the
// rest in the peer's buffer (zero-copy views of its tensors) instead of fresh frame buffers here:
// a rank behind its peers by a whole tensor's all-gather held that tensor twice (issue 17).
// Deadlock-free: a group's ops run in the same order on every rank, one at a time, so the frames
// of the oldest unfinished op are always at the head of their link's queue.
const QUEUE_MAX_BYTES = 4 << 20;
const SEND_BATCH = 2 << 20; // bytes offered to the kernel per system call (512 KiB and 8 MiB: slower)

export interface Frame {
  h: FrameHeader;
  // false: the payload CRC is not checked yet; the consumer that asked for it lazily
  // (reduce-scatter, which checks it in the same pass as its add) must, or `verify` does.
  verified: boolean;
  buf: Uint8Array; // header + payload, reusable as an outgoing frame (ring forwarding)
  payload: Uint8Array; // buf[32, 32+len), 4-byte aligned
}

/** What the receiving collective expects next on this link. */
export interface Expect {
  op: number;
  seq: number;
  step: number;
  chunk: number;
  total: number;
  len: number;
}

/** A posted receive: the payload of the next matching frame goes straight into `dst`. */
interface Posted {
  expect: Expect;
  dst: Uint8Array; // exactly expect.len bytes
  resolve: (payloadCrc: number) => void;
  reject: (e: Error) => void;
}

interface Waiter {
  expect: Expect;
  lazy: boolean; // hand over the frame with its CRC unchecked
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class Conn implements Link {
  /** "rank 3" once authenticated, else the remote address. */
  label: string;
  dead: Error | null = null;
  /** Handshake message callback (set by the endpoint); must switch to frames synchronously. */
  onHs: (type: HsType, body: unknown) => void = () => {};
  /** Called once when the link fails or the peer sends an abort frame. */
  onFail: (e: Error, abortedByPeer: boolean) => void = () => {};

  private mode: "hs" | "frames" = "hs";
  private handed = false; // received(): the bytes completed a frame handed to a waiting receive
  private hdr = new Uint8Array(FRAME_HEADER);
  private hdrFill = 0;
  private hsLen = -1; // body length of the handshake message being read
  private cur: Frame | null = null; // frame whose payload is being read
  private curFill = 0;
  private curCrc = 0; // CRC32C of cur's payload bytes received so far
  private queue: Frame[] = [];
  private queuedBytes = 0;
  private waiter: Waiter | null = null;
  // Posted receives, in arrival order; never non-empty while `queue` is (frames that came
  // first are matched on posting). `direct`: posted[0] while its payload streams into dst.
  private posted: Posted[] = [];
  private direct = false;
  private postedTimer: ReturnType<typeof setTimeout> | null = null;
  private postedDeadlineMs = 0;
  private out: Uint8Array[] = [];
  private outOff = 0;
  private flushQueued = false;
  private closing = false; // end the socket once `out` is written
  private flushWaiters: (() => void)[] = [];
  /** Queued bytes were thrown away because the link died before they were written. */
  dropped = false;
  private pool = new Map<number, Uint8Array[]>();
  private written: ((() => void) | undefined)[] = []; // parallel to `out`: called once written
  private prep: ((() => void) | undefined)[] = []; // parallel to `out`: called before it is written

  constructor(private readonly sock: NetSocket, public maxLen: number, label: string) {
    this.label = label;
  }

  toFrames(): void {
    this.mode = "frames";
    this.hdrFill = 0;
  }

  // ---- receiving (pulled by the reactor: it reads into target(), then calls received()) ----

  /** Where the next bytes go: exactly the rest of the current header or payload. */
  target(): Uint8Array {
    if (this.dead) return DISCARD;
    if (this.mode === "hs") {
      return this.hsLen < 0 ? this.hdr.subarray(this.hdrFill, HS_HEADER) : this.cur!.buf.subarray(this.curFill);
    }
    return this.cur === null ? this.hdr.subarray(this.hdrFill, FRAME_HEADER) : this.cur.buf.subarray(this.curFill);
  }

  /**
   * `n` bytes landed at target(). True when they completed a frame a collective is waiting for
   * (reduce-scatter's partial sums): the reactor then stops reading this socket for the round,
   * so the collective checks and adds the frame while it is still in cache instead of after up
   * to READ_BUDGET more bytes (4 ranks, all_reduce 64 MiB: ~10 % less CPU per op).
   */
  received(n: number): boolean {
    if (this.dead) return false;
    this.handed = false;
    try {
      if (this.mode === "hs") this.gotHs(n);
      else this.gotFrame(n);
    } catch (e) {
      this.fail(new Error(`${this.label}: ${(e as Error).message}`), false);
    }
    return this.handed;
  }

  private gotHs(n: number): void {
    if (this.hsLen < 0) {
      this.hdrFill += n;
      if (this.hdrFill < HS_HEADER) return;
      const { len } = readHsHeader(this.hdr); // throws before any allocation
      this.hsLen = len;
      this.cur = { h: null as unknown as FrameHeader, buf: new Uint8Array(HS_HEADER + len), payload: new Uint8Array(0), verified: true };
      this.cur.buf.set(this.hdr.subarray(0, HS_HEADER));
      this.curFill = HS_HEADER;
      if (len === 0) this.finishHs();
      return;
    }
    this.curFill += n;
    if (this.curFill === this.cur!.buf.length) this.finishHs();
  }

  private finishHs(): void {
    const buf = this.cur!.buf;
    const type = buf[5] as HsType;
    this.cur = null;
    this.hsLen = -1;
    this.hdrFill = 0;
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder().decode(buf.subarray(HS_HEADER)));
    } catch {
      throw new Error("handshake body is not JSON");
    }
    this.onHs(type, body);
  }

  private gotFrame(n: number): void {
    if (this.cur === null) {
      this.hdrFill += n;
      if (this.hdrFill < FRAME_HEADER) return;
      this.hdrFill = 0;
      const h = readFrameHeader(this.hdr, this.maxLen); // throws before allocating the payload
      const p = this.waiter === null ? this.posted[0] : undefined;
      if (p !== undefined && !this.check(h, p.expect)) {
        // Expected frame with a posted destination: the kernel writes its payload there.
        this.cur = { h, buf: p.dst, payload: p.dst, verified: false };
        this.curFill = 0;
        this.curCrc = 0;
        this.direct = true;
      } else {
        const buf = this.take(FRAME_HEADER + h.len);
        buf.set(this.hdr);
        this.cur = { h, buf, payload: buf.subarray(FRAME_HEADER), verified: false };
        this.curFill = FRAME_HEADER;
        this.curCrc = 0;
      }
      if (h.len === 0) this.finishFrame();
      return;
    }
    // A payload going to the caller's buffer (or an abort) is CRC'd piece by piece as it lands,
    // while parts of it may still be in cache. A pooled frame is checked when it is consumed:
    // reduce-scatter does it in the same pass over the payload as its add.
    if (this.direct || (this.cur.h.op & 0x0f) === Op.Abort) this.curCrc = crc32c(this.cur.buf, this.curCrc, this.curFill, n);
    this.curFill += n;
    if (this.curFill === this.cur.buf.length) this.finishFrame();
  }

  private finishFrame(): void {
    const f = this.cur!;
    this.cur = null;
    const crc = this.curCrc; // of the whole payload, accumulated piece by piece in gotFrame
    if (this.direct) {
      this.direct = false;
      if (crc !== f.h.payloadCrc) throw new Error(crcMismatch(f.h, crc)); // fail() rejects every posted receive
      this.posted.shift()!.resolve(crc);
      this.armPosted();
      return;
    }
    if ((f.h.op & 0x0f) === Op.Abort) {
      if (crc !== f.h.payloadCrc) throw new Error(crcMismatch(f.h, crc));
      this.fail(new Error(`${this.label} aborted: ${new TextDecoder().decode(f.payload)}`), true);
      return;
    }
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      clearTimeout(w.timer);
      if (this.check(f.h, w.expect)) return w.reject(this.mismatch(f.h, w.expect));
      const bad = w.lazy ? null : this.verify(f);
      if (bad) {
        w.reject(new Error(`${this.label}: ${bad}`));
        throw new Error(bad); // fails the link (received() names the peer)
      }
      this.handed = true;
      w.resolve(f);
    } else if (this.posted.length > 0) {
      // A frame whose header came before its receive was posted, or one that does not match.
      const p = this.posted.shift()!;
      if (this.check(f.h, p.expect)) {
        this.release(f);
        p.reject(this.mismatch(f.h, p.expect));
      } else {
        const bad = this.verify(f);
        if (bad) {
          p.reject(new Error(`${this.label}: ${bad}`));
          throw new Error(bad);
        }
        p.dst.set(f.payload);
        this.release(f);
        p.resolve(f.h.payloadCrc);
        this.armPosted();
      }
    } else {
      this.queue.push(f);
      this.queuedBytes += f.buf.length;
    }
  }

  /**
   * Frame buffers are pooled per exact length (almost all are full chunks): allocating a fresh
   * zero-filled 512 KiB buffer per frame cost ~10x the copy into it (measured under Bun).
   */
  private take(len: number): Uint8Array {
    return this.pool.get(len)?.pop() ?? new Uint8Array(len);
  }

  /** Give a received frame's buffer back once its payload is consumed (or forwarded and written). */
  release(f: Frame): void {
    const list = this.pool.get(f.buf.length) ?? [];
    if (list.length < POOL_MAX) list.push(f.buf);
    this.pool.set(f.buf.length, list);
  }

  /** Check a pooled frame's payload CRC (once): null, or what is wrong. */
  verify(f: Frame): string | null {
    if (f.verified) return null;
    const crc = crc32c(f.payload);
    if (crc !== f.h.payloadCrc) return crcMismatch(f.h, crc);
    f.verified = true;
    return null;
  }

  /** A queued frame handed over outside the socket callback: check it, failing the link if bad. */
  private verifyQueued(f: Frame): Error | null {
    const bad = this.verify(f);
    if (!bad) return null;
    const e = new Error(`${this.label}: ${bad}`);
    this.fail(e, false);
    return e;
  }

  /**
   * The next frame, which must match `e`; rejects after `deadlineMs` without one. `lazy`: its
   * payload CRC is left to the caller (Conn.verify, or its own pass; f.verified says which).
   */
  recv(e: Expect, deadlineMs: number, lazy = false): Promise<Frame> {
    const f = this.shiftQueued();
    if (f) {
      if (this.check(f.h, e)) return Promise.reject(this.mismatch(f.h, e));
      const bad = lazy ? null : this.verifyQueued(f);
      return bad ? Promise.reject(bad) : Promise.resolve(f);
    }
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no frame from ${this.label} within ${deadlineMs} ms ` +
          `(waiting for ${opName(e.op)} seq ${e.seq} step ${e.step} chunk ${e.chunk})`));
      }, deadlineMs);
      this.waiter = { expect: e, lazy, resolve, reject, timer };
    });
  }

  /** The oldest queued frame, if any. */
  private shiftQueued(): Frame | undefined {
    const f = this.queue.shift();
    if (f) this.queuedBytes -= f.buf.length;
    return f;
  }

  /** Whether the reactor should read this socket now: not while QUEUE_MAX_BYTES of frames wait
   *  for their receives (a frame already started, a handshake or a dead link: always). */
  wantsRead(): boolean {
    return this.queuedBytes < QUEUE_MAX_BYTES || this.cur !== null || this.mode === "hs" || this.dead !== null;
  }

  /**
   * Post a receive: the payload of the next frame, which must match `e`, lands in `dst`
   * (e.len bytes) without a frame buffer; resolves with its checked payload CRC. Posts queue up
   * in order; rejects when no frame completes within `deadlineMs` of the previous one.
   */
  recvInto(e: Expect, dst: Uint8Array, deadlineMs: number): Promise<number> {
    if (dst.length !== e.len) return Promise.reject(new Error(`recvInto: ${dst.length} B destination for a ${e.len} B frame`));
    if (this.posted.length === 0) {
      const f = this.shiftQueued();
      if (f) {
        if (this.check(f.h, e)) return Promise.reject(this.mismatch(f.h, e));
        const bad = this.verifyQueued(f);
        if (bad) return Promise.reject(bad);
        dst.set(f.payload);
        this.release(f);
        return Promise.resolve(f.h.payloadCrc);
      }
    }
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.posted.push({ expect: e, dst, resolve, reject });
      this.postedDeadlineMs = deadlineMs;
      if (this.posted.length === 1) this.armPosted();
    });
  }

  /** (Re)start the no-progress deadline of posted[0], or stop it when nothing is posted. */
  private armPosted(): void {
    if (this.postedTimer !== null) clearTimeout(this.postedTimer);
    this.postedTimer = null;
    const p = this.posted[0];
    if (!p) return;
    const ms = this.postedDeadlineMs;
    this.postedTimer = setTimeout(() => {
      this.postedTimer = null;
      const e = p.expect;
      this.rejectPosted(new Error(`no frame from ${this.label} within ${ms} ms ` +
        `(waiting for ${opName(e.op)} seq ${e.seq} step ${e.step} chunk ${e.chunk})`));
    }, ms);
  }

  private rejectPosted(e: Error): void {
    if (this.postedTimer !== null) clearTimeout(this.postedTimer);
    this.postedTimer = null;
    // A frame half-read into a destination is dropped with it; its bytes are never used.
    if (this.direct) {
      this.direct = false;
      this.cur = null;
    }
    for (const p of this.posted.splice(0)) p.reject(e);
  }

  private check(h: FrameHeader, e: Expect): boolean {
    return h.op !== e.op || h.seq !== e.seq || h.total !== e.total || h.step !== e.step || h.chunk !== e.chunk || h.len !== e.len;
  }

  private mismatch(h: FrameHeader, e: Expect): Error {
    if (h.op !== e.op || h.seq !== e.seq) {
      return new Error(`op mismatch: ${this.label} sent ${opName(h.op)} seq ${h.seq}, ` +
        `this rank is in ${opName(e.op)} seq ${e.seq}`);
    }
    if (h.total !== e.total) {
      return new Error(`size mismatch in ${opName(e.op)} seq ${e.seq}: ${this.label} sends ${h.total} B, ` +
        `this rank expects ${e.total} B`);
    }
    return new Error(`frame mismatch in ${opName(e.op)} seq ${e.seq} from ${this.label}: ` +
      `got step ${h.step} chunk ${h.chunk} len ${h.len}, expected step ${e.step} chunk ${e.chunk} len ${e.len}`);
  }

  /**
   * Queue bytes (a message, a header, a payload); never blocks. `done`: once in the kernel.
   * `prepare`: runs just before `buf` goes to the kernel (a header whose payload CRC is
   * computed then, while the payload is brought into cache for the kernel's copy anyway).
   */
  send(buf: Uint8Array, done?: () => void, prepare?: () => void): void {
    if (this.dead) return;
    if (buf.length === 0) {
      prepare?.();
      return done?.();
    }
    this.out.push(buf);
    this.written.push(done);
    this.prep.push(prepare);
    // Everything queued by the same synchronous stretch (a header and its payload, a step's
    // chunks) goes out in one gathered system call.
    if (this.out.length === 1 && !this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => {
        this.flushQueued = false;
        this.flush();
      });
    }
  }

  /** Write what the kernel takes now, queued buffers gathered into one system call; the
   *  reactor calls it again when the socket is writable. */
  flush(): void {
    while (this.out.length > 0) {
      // A batch of about SEND_BATCH bytes: what the kernel takes in one go without the
      // prepared payloads falling out of cache before it copies them.
      let k = 0;
      for (let bytes = -this.outOff; k < this.out.length && k < 64 && bytes < SEND_BATCH; k++) {
        bytes += this.out[k].length;
        const prep = this.prep[k];
        if (prep) {
          this.prep[k] = undefined;
          prep();
        }
      }
      let n = this.sock.writev(this.out, this.outOff, k);
      if (n < 0) {
        // The peer closed. Don't fail yet: its abort frame (the real reason) may still be
        // unread; the reactor reads it before the EOF, and the EOF fails the link.
        this.dropped ||= this.out.length > 0;
        this.out.length = 0;
        this.written.length = 0;
    this.prep.length = 0;
        this.outOff = 0;
        for (const w of this.flushWaiters.splice(0)) w();
        return;
      }
      if (n === 0) return; // kernel buffer full: resume when writable
      while (n > 0) {
        const left = this.out[0].length - this.outOff;
        if (n < left) {
          this.outOff += n;
          return; // partly taken: the rest when writable
        }
        n -= left;
        this.out.shift();
        this.prep.shift();
        this.written.shift()?.();
        this.outOff = 0;
      }
    }
    for (const w of this.flushWaiters.splice(0)) w();
    if (this.closing) this.sock.end();
  }

  writable(): void {
    this.flush();
  }

  wantsWrite(): boolean {
    return this.out.length > 0;
  }

  /** A socket error from the reactor (the peer reset us, ...); closedByPeer() follows. */
  error(e: Error): void {
    this.fail(new Error(`connection to ${this.label}: ${e.message}`), false);
  }

  get pendingBytes(): number {
    return this.out.reduce((a, b) => a + b.length, 0) - this.outOff;
  }

  /** Resolves once everything queued so far reached the kernel (or the link died). */
  flushed(): Promise<void> {
    if (this.out.length === 0) return Promise.resolve();
    return new Promise((r) => this.flushWaiters.push(r));
  }

  /**
   * The peer closed (EOF). Frames already queued stay readable and the group is not failed
   * here: a peer that finished its op and closed is fine unless we still wait on it, so only
   * a receive that needs more from it fails (and that fails the group).
   */
  closedByPeer(): void {
    if (this.dead) return;
    this.dead = new Error(`connection to ${this.label} closed`);
    const w = this.waiter;
    this.waiter = null;
    if (w) {
      clearTimeout(w.timer);
      w.reject(this.dead);
    }
    this.rejectPosted(this.dead);
    this.dropped ||= this.out.length > 0;
    this.out.length = 0;
    this.written.length = 0;
    this.prep.length = 0;
    for (const f of this.flushWaiters.splice(0)) f();
    this.onClosed();
  }

  /** Called once when the peer closed; the handshake side uses it before the link is attached. */
  onClosed: () => void = () => {};

  /** First failure wins: record it, reject the pending and posted receives, drop queued frames.
   *  Returns false when the link was already dead. */
  private markDead(e: Error): boolean {
    if (this.dead) return false;
    this.dead = e;
    const w = this.waiter;
    this.waiter = null;
    if (w) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.rejectPosted(e);
    return true;
  }

  /** A protocol error or the peer's abort: mark dead, fail the group, close. Idempotent. */
  fail(e: Error, abortedByPeer: boolean): void {
    if (!this.markDead(e)) return;
    this.onFail(e, abortedByPeer);
    this.dropped ||= this.out.length > 0;
    this.out.length = 0;
    this.written.length = 0;
    this.prep.length = 0;
    for (const w of this.flushWaiters.splice(0)) w();
    this.sock.end();
  }

  /**
   * Our side gave up (`e`): reject the pending receive, send `abortFrame` (best effort) so the
   * peer fails at once instead of at its deadline, then close.
   */
  abort(e: Error, abortFrame: Uint8Array): void {
    if (!this.markDead(e)) return;
    this.closing = true;
    this.out.push(abortFrame);
    this.written.push(undefined);
    this.prep.push(undefined);
    if (this.out.length === 1) this.flush();
  }

  /** Close without a word (shutdown, rejected handshake after its Reject message). */
  close(): void {
    this.dead ??= new Error(`connection to ${this.label} closed`);
    this.closing = true;
    if (this.out.length === 0) this.sock.end();
  }

  get remote(): string {
    return `${this.sock.remoteAddress}`;
  }
}
