// Bindings to mesh/net.c (compiled at load by Bun's TinyCC through bun:ffi): non-blocking
// TCP sockets, poll, an eventfd to wake the poll loop from another thread, and the SSE f32
// reductions. Loaded once per thread that imports it (the transport worker, and the compute
// thread for `wake`). Linux x86-64 only, like the rest of the native code here.
import { cc } from "bun:ffi";

const lib = cc({
  source: new URL("./net.c", import.meta.url).pathname,
  symbols: {
    nn_socket: { args: ["i32"], returns: "i32" },
    nn_listen: { args: ["i32", "ptr", "i32", "i32"], returns: "i32" },
    nn_local_port: { args: ["i32"], returns: "i32" },
    nn_accept: { args: ["i32", "ptr"], returns: "i32" },
    nn_connect: { args: ["i32", "ptr", "i32"], returns: "i32" },
    nn_sockerr: { args: ["i32"], returns: "i32" },
    nn_send: { args: ["i32", "ptr", "u64"], returns: "i64" },
    nn_sendv: { args: ["i32", "ptr", "i32"], returns: "i64" },
    nn_recv: { args: ["i32", "ptr", "u64"], returns: "i64" },
    nn_poll: { args: ["ptr", "i32", "i32"], returns: "i32" },
    nn_shutdown_wr: { args: ["i32"], returns: "i32" },
    nn_close: { args: ["i32"], returns: "i32" },
    nn_eventfd: { args: [], returns: "i32" },
    nn_wake: { args: ["i32"], returns: "i32" },
    nn_drain: { args: ["i32"], returns: "i32" },
    nn_add_f32: { args: ["ptr", "ptr", "ptr", "u64"], returns: "void" },
    nn_add_div_f32: { args: ["ptr", "ptr", "ptr", "u64", "f32"], returns: "void" },
    nn_sockaddr: { args: ["i32", "ptr", "i32", "ptr"], returns: "i32" },
    nn_sockaddr_str: { args: ["ptr", "ptr"], returns: "i32" },
    nn_strerror: { args: ["i32", "ptr"], returns: "void" },
  },
});
export const sys = lib.symbols;

export const EAGAIN = 11;
export const EINPROGRESS = 115;
export const EADDRINUSE = 98;
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;

const textBuf = new Uint8Array(128);

/** "Connection refused (ECONNREFUSED 111)"-style text for a negative return value. */
export function errnoText(ret: number): string {
  sys.nn_strerror(-ret, textBuf);
  return `${new TextDecoder().decode(textBuf.subarray(0, textBuf.indexOf(0)))} (errno ${-ret})`;
}

/** The sockaddr for numeric `ip` (v4 or v6) and port, or throws naming the address. */
export function sockaddr(ip: string, port: number): { sa: Uint8Array; len: number; family: number } {
  const family = ip.includes(":") ? 10 : 2;
  const sa = new Uint8Array(28);
  const len = sys.nn_sockaddr(family, Buffer.from(`${ip}\0`), port, sa);
  if (len < 0) throw new Error(`mesh: ${JSON.stringify(ip)} is not a numeric IPv4/IPv6 address`);
  return { sa, len, family };
}

/** "ip:port" (IPv6 bracketed) of a sockaddr filled by accept. */
export function sockaddrText(sa: Uint8Array): string {
  const out = new Uint8Array(64);
  const port = sys.nn_sockaddr_str(sa, out);
  if (port < 0) return "unknown address";
  const ip = new TextDecoder().decode(out.subarray(0, out.indexOf(0)));
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The poll loop sleeps in poll(); another thread calls this to wake it at once. */
export function wake(efd: number): void {
  sys.nn_wake(efd);
}

// Below this many elements the FFI call costs more than the JS loop.
const NATIVE_MIN = 64;

/** d[i] = a[i] + b[i] (f32, IEEE; d may alias a or b). */
export function addF32(d: Float32Array, a: Float32Array, b: Float32Array): void {
  const n = d.length;
  if (n < NATIVE_MIN) {
    for (let i = 0; i < n; i++) d[i] = a[i] + b[i];
    return;
  }
  sys.nn_add_f32(d, a, b, n);
}

/** d[i] = f32(a[i] + b[i]) / k: the sum rounded to f32 first, then one IEEE division. */
export function addDivF32(d: Float32Array, a: Float32Array, b: Float32Array, k: number): void {
  const n = d.length;
  if (n < NATIVE_MIN) {
    for (let i = 0; i < n; i++) d[i] = Math.fround(a[i] + b[i]) / k;
    return;
  }
  sys.nn_add_div_f32(d, a, b, n, k);
}
