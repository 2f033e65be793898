// The transport worker's event loop over native non-blocking sockets (mesh/net.ts): one
// poll() over the listener, every link and a wake eventfd, then a turn of the JS event loop
// (timers, messages from the compute thread, promise continuations), and again. Receives are
// pulled: each link says where its next bytes go (`target`: a 32-byte header, or the
// caller's own SharedArrayBuffer for a posted payload) and the kernel copies them there, so
// payloads cross no runtime buffers. Sends are system calls made at once from the caller's
// buffers; only what the kernel does not take yet waits for POLLOUT.
import { dns } from "bun";
import { ptr } from "bun:ffi";
import {
  EADDRINUSE, EAGAIN, EINPROGRESS, errnoText, POLLERR, POLLHUP, POLLIN, POLLOUT, sockaddr, sockaddrText, sys,
} from "./net.ts";

/** What the reactor drives for one connected socket (mesh/conn.ts implements it). */
export interface Link {
  target(): Uint8Array; // where the next received bytes go (non-empty; DISCARD once dead)
  received(n: number): boolean; // n bytes landed at the start of target(); true: read no more this round
  wantsRead(): boolean; // false: leave the bytes in the kernel (its receiver is full), poll without POLLIN
  writable(): void; // the kernel takes bytes again: flush
  wantsWrite(): boolean;
  closedByPeer(): void; // EOF (after any error())
  error(e: Error): void; // a socket error; closedByPeer() follows
}

/** Where a socket's bytes go once nobody wants them (no link, or a link that died). */
export const DISCARD = new Uint8Array(64 << 10);
const READ_BUDGET = 8 << 20; // bytes per socket per poll round, so one busy link cannot starve the rest
const IDLE_POLL_MS = 20; // upper bound on a poll() with nothing in flight: JS timers fire at least this often
const LINGER_MS = 5000; // an ended socket whose peer never closes is dropped after this
const IOV_MAX = 64;

export class NetSocket {
  link: Link | null = null;
  private state: "open" | "ending" | "closed" = "open";
  private iov = new BigUint64Array(2 * IOV_MAX);
  private lingerTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(private r: Reactor, readonly fd: number, readonly remoteAddress: string) {}

  get open(): boolean {
    return this.state === "open";
  }

  /** Bytes the kernel took now (maybe fewer), 0 when its buffer is full, -1 once closed. */
  write(b: Uint8Array): number {
    if (this.state !== "open") return -1;
    if (b.length === 0) return 0;
    const n = Number(sys.nn_send(this.fd, b, b.length));
    return n >= 0 ? n : n === -EAGAIN ? 0 : -1;
  }

  /** Gathered write of bufs[0].subarray(off), bufs[1], ..., bufs[count-1] (at most 64): bytes
   *  taken, 0 or -1 as write. */
  writev(bufs: readonly Uint8Array[], off: number, count = bufs.length): number {
    if (this.state !== "open") return -1;
    const k = Math.min(count, IOV_MAX);
    let j = 0;
    for (let i = 0; i < k; i++) {
      const b = i === 0 ? bufs[0].subarray(off) : bufs[i];
      if (b.length === 0) continue;
      this.iov[2 * j] = BigInt(ptr(b)); // the view's own first byte
      this.iov[2 * j + 1] = BigInt(b.length);
      j++;
    }
    if (j === 0) return 0;
    const n = Number(sys.nn_sendv(this.fd, this.iov, j));
    return n >= 0 ? n : n === -EAGAIN ? 0 : -1;
  }

  /**
   * No more writes: FIN goes after the bytes already in the kernel. Reading goes on (into a
   * discard buffer once the link says so) until the peer closes, so our last frames (an
   * abort, a Reject) are not destroyed by a reset; bounded by LINGER_MS.
   */
  end(): void {
    if (this.state !== "open") return;
    this.state = "ending";
    sys.nn_shutdown_wr(this.fd);
    this.lingerTimer = setTimeout(() => this.destroy(), LINGER_MS);
  }

  /** Close the descriptor now. */
  destroy(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.r.forget(this);
    sys.nn_close(this.fd);
  }

  /** @internal one poll round's readiness for this socket. */
  events(): number {
    return (this.link?.wantsRead() === false ? 0 : POLLIN) | (this.state === "open" && this.link?.wantsWrite() ? POLLOUT : 0);
  }

  /** @internal */
  ready(rev: number): void {
    const link = this.link;
    if (rev & POLLOUT && this.state === "open") link?.writable();
    if (!(rev & (POLLIN | POLLHUP | POLLERR))) return;
    let budget = READ_BUDGET;
    // a hang-up or error is read through (to its EOF), else poll would report it again at once
    const hold = !(rev & (POLLHUP | POLLERR));
    while (budget > 0 && this.state !== "closed") {
      if (hold && link?.wantsRead() === false) break; // backpressure: the link's queue is full
      const t = link?.target() ?? DISCARD;
      const n = Number(sys.nn_recv(this.fd, t, t.length));
      if (n > 0) {
        budget -= n;
        if (link?.received(n)) break; // a waiting collective runs first (Conn.received)
        if (n < t.length) break; // most likely drained; poll tells us when there is more
        continue;
      }
      if (n === -EAGAIN) break;
      if (n < 0) link?.error(new Error(errnoText(n)));
      this.destroy();
      link?.closedByPeer(); // a link that ended itself is dead already and ignores this
      break;
    }
  }
}

/** A listening socket: accepted connections go to `onAccept`. */
class Listener {
  constructor(readonly fd: number, readonly port: number, readonly onAccept: (s: NetSocket) => void) {}
}

/** A connect() under way: resolved once the socket is writable without error. */
interface Pending {
  fd: number;
  what: string;
  resolve: (s: NetSocket) => void;
  reject: (e: Error) => void;
}

export class Reactor {
  readonly wakeFd: number;
  private sockets = new Set<NetSocket>();
  private listeners = new Set<Listener>();
  private connecting = new Set<Pending>();
  private stopped = false;
  private pfd = new Int32Array(64 * 2); // struct pollfd {i32 fd; i16 events; i16 revents}
  private ev = new Int16Array(this.pfd.buffer); // the same memory, for events / revents
  private loopDone: Promise<void>;

  constructor() {
    const efd = sys.nn_eventfd();
    if (efd < 0) throw new Error(`mesh: eventfd: ${errnoText(efd)}`);
    this.wakeFd = efd;
    this.loopDone = this.loop();
  }

  /** Bind `host` (name or numeric) on the first free port of `ports` (0: any) and listen. */
  async listen(host: string, ports: readonly number[], onAccept: (s: NetSocket) => void): Promise<number> {
    const ip = await resolve(host);
    let last = "";
    for (const port of ports) {
      const { sa, len, family } = sockaddr(ip, port);
      const fd = sys.nn_socket(family);
      if (fd < 0) throw new Error(`mesh: socket: ${errnoText(fd)}`);
      const rc = sys.nn_listen(fd, sa, len, 128);
      if (rc === 0) {
        const l = new Listener(fd, sys.nn_local_port(fd), onAccept);
        this.listeners.add(l);
        sys.nn_wake(this.wakeFd);
        return l.port;
      }
      sys.nn_close(fd);
      last = errnoText(rc);
      if (rc !== -EADDRINUSE) break;
    }
    throw new Error(`mesh: cannot listen on ${host} ports [${ports.join(", ")}]: ${last}`);
  }

  /** Connect to host:port (name or numeric); rejects with the system's reason. */
  async connect(host: string, port: number): Promise<NetSocket> {
    const ip = await resolve(host);
    const { sa, len, family } = sockaddr(ip, port);
    const fd = sys.nn_socket(family);
    if (fd < 0) throw new Error(`socket: ${errnoText(fd)}`);
    const rc = sys.nn_connect(fd, sa, len);
    const remote = ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
    if (rc === 0) return this.adopt(fd, remote);
    if (rc !== -EINPROGRESS) {
      sys.nn_close(fd);
      throw new Error(errnoText(rc));
    }
    return new Promise((resolve, reject) => {
      this.connecting.add({ fd, what: remote, resolve, reject });
      sys.nn_wake(this.wakeFd);
    });
  }

  /** Close every socket and listener and end the loop. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const s of [...this.sockets]) s.destroy();
    for (const l of this.listeners) sys.nn_close(l.fd);
    this.listeners.clear();
    for (const p of this.connecting) {
      sys.nn_close(p.fd);
      p.reject(new Error("mesh: transport closed"));
    }
    this.connecting.clear();
    sys.nn_wake(this.wakeFd);
    await this.loopDone;
    sys.nn_close(this.wakeFd);
  }

  /** Stop listening (links stay). */
  unlisten(): void {
    for (const l of this.listeners) sys.nn_close(l.fd);
    this.listeners.clear();
  }

  /** @internal */
  forget(s: NetSocket): void {
    this.sockets.delete(s);
  }

  private adopt(fd: number, remote: string): NetSocket {
    const s = new NetSocket(this, fd, remote);
    this.sockets.add(s);
    return s;
  }

  private async loop(): Promise<void> {
    let busy = false;
    while (!this.stopped) {
      busy = this.round(busy ? 0 : IDLE_POLL_MS);
      await new Promise<void>((r) => setImmediate(r)); // timers, messages, continuations
    }
  }

  /** One poll() and its dispatch; true when something was ready. */
  private round(timeoutMs: number): boolean {
    const socks = [...this.sockets];
    const lis = [...this.listeners];
    const conns = [...this.connecting];
    const n = 1 + lis.length + conns.length + socks.length;
    if (this.pfd.length < 2 * n) {
      this.pfd = new Int32Array(4 * n);
      this.ev = new Int16Array(this.pfd.buffer);
    }
    const { pfd, ev } = this;
    let k = 0;
    const put = (fd: number, events: number): void => {
      pfd[2 * k] = fd;
      ev[4 * k + 2] = events;
      ev[4 * k + 3] = 0;
      k++;
    };
    put(this.wakeFd, POLLIN);
    for (const l of lis) put(l.fd, POLLIN);
    for (const c of conns) put(c.fd, POLLOUT);
    for (const s of socks) put(s.fd, s.events());
    const ready = sys.nn_poll(pfd, k, timeoutMs);
    if (ready <= 0) return false;
    const rev = (i: number): number => ev[4 * i + 3];
    let i = 0;
    if (rev(i++)) sys.nn_drain(this.wakeFd);
    for (const l of lis) if (rev(i++)) this.acceptAll(l);
    for (const c of conns) if (rev(i++)) this.connected(c);
    for (const s of socks) {
      const r = rev(i++);
      if (r) s.ready(r);
    }
    return true;
  }

  private acceptAll(l: Listener): void {
    const sa = new Uint8Array(128);
    for (;;) {
      if (!this.listeners.has(l)) return;
      const fd = sys.nn_accept(l.fd, sa);
      if (fd < 0) return; // EAGAIN, or a connection that died before we took it
      l.onAccept(this.adopt(fd, sockaddrText(sa)));
    }
  }

  private connected(c: Pending): void {
    this.connecting.delete(c);
    const e = sys.nn_sockerr(c.fd);
    if (e !== 0) {
      sys.nn_close(c.fd);
      c.reject(new Error(errnoText(e)));
    } else {
      c.resolve(this.adopt(c.fd, c.what));
    }
  }
}

/** Numeric address for a host name (numeric addresses pass through). */
async function resolve(host: string): Promise<string> {
  const h = host.replace(/^\[|\]$/g, "");
  if (/^[\d.]+$/.test(h) || h.includes(":")) return h;
  const r = await dns.lookup(h, { family: 0 });
  if (r.length === 0) throw new Error(`mesh: cannot resolve ${JSON.stringify(host)}`);
  return r[0].address;
}
