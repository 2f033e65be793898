// Which address a worker's data plane binds to and advertises in the rendezvous table. --host
// wins. Otherwise the job's launch.host (127.0.0.1 by default) serves one host; but a worker that
// reaches NATS over the network is on another host (or network namespace) than loopback peers
// could reach, and advertising 127.0.0.1 there would send its peers to themselves. Such a worker
// takes the address its own host uses on the route to the NATS server: the local end of a TCP
// connection to it. Peers that reach the same NATS server over that network can reach it too.
import { connect } from "node:net";

const LOOPBACK = /^(127\.|localhost$|::1$|\[::1\]$)/;

/** First server of a NATS URL list ("nats://a:4222,nats://b:4222"), as host and port. */
function firstServer(natsUrl: string): { host: string; port: number } {
  const first = natsUrl.split(",")[0].trim();
  const u = new URL(first.includes("://") ? first : `nats://${first}`);
  return { host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || 4222) };
}

/** The local address of a TCP connection to host:port (IPv4-mapped IPv6 unwrapped). */
export function localAddressToward(host: string, port: number, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    const t = setTimeout(() => { s.destroy(); reject(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`)); }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(t);
      const a = s.localAddress ?? "";
      s.end();
      s.destroy();
      if (!a) reject(new Error(`connection to ${host}:${port} has no local address`));
      else resolve(a.replace(/^::ffff:/, ""));
    });
    s.once("error", (e) => { clearTimeout(t); reject(e); });
  });
}

/** The data-plane address of a worker: `flag` (--host), else `launchHost` unless that is a
 *  loopback address while NATS is not (then this host's address toward NATS), else loopback. */
export async function dataPlaneHost(o: { flag?: string; launchHost?: string; natsUrl: string }): Promise<string> {
  if (o.flag) return o.flag;
  const launchHost = o.launchHost ?? "127.0.0.1";
  if (!LOOPBACK.test(launchHost)) return launchHost;
  const nats = firstServer(o.natsUrl);
  if (LOOPBACK.test(nats.host)) return launchHost;
  try {
    return await localAddressToward(nats.host, nats.port);
  } catch (e) {
    throw new Error(`--host: cannot tell this host's address toward NATS at ${nats.host}:${nats.port} (${(e as Error).message}); pass --host ADDR, an address the other ranks can reach`);
  }
}
