// One line for the errors a user meets at the edges of a command (NATS unreachable or refusing
// the token, a file that is not there), instead of a stack trace. Entry points print these.

/** A failed NATS connect as one line naming the flag to fix. `tokenFlag`: how this command takes the token. */
export function natsConnectError(url: string, e: unknown, tokenFlag: string, urlFlag: string): string {
  const m = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: string })?.code;
  if (/authorization violation/i.test(m))
    return `${tokenFlag}: the NATS server at ${url} refused the connection (authorization violation): give its token with ${tokenFlag === "VEOMNI_NATS_TOKEN" ? tokenFlag : `${tokenFlag} or VEOMNI_NATS_TOKEN`}`;
  if (/connection refused/i.test(m) || code === "ECONNREFUSED")
    return `${urlFlag}: cannot reach NATS at ${url} (connection refused): is nats-server running there and listening on that port?`;
  if (/timeout/i.test(m)) return `${urlFlag}: no answer from NATS at ${url} within 5 s (timeout): check the host, port and firewall`;
  if (code === "ENOTFOUND" || /ENOTFOUND/.test(m)) return `${urlFlag}: cannot resolve the host of ${url}`;
  return `${urlFlag}: cannot connect to NATS at ${url}: ${m.split("\n")[0]}`;
}

/** Marks an error as already explained: entry points print its message alone, without a stack. */
export class UserError extends Error {
  override name = "UserError";
}
