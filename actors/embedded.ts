// The embedded control plane: a private `nats-server -js` on loopback with a random token and a
// temporary store, owned by the coordinator (or a test) and stopped with it. The token and store
// go in a 0600 config file, not on the command line (visible to `ps`). Readiness and the port
// come from the server's own log lines on stderr (event-driven, no polling).
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Subprocess } from "bun";

export interface NatsServer {
  url: string;
  port: number;
  token: string;
  storeDir: string;
  proc: Subprocess;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. Removes the temp dir if it made it. */
  stop(graceMs?: number): Promise<void>;
}

export interface NatsServerOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  token?: string;
  /** JetStream store; a fresh temp dir (removed on stop) when absent. */
  storeDir?: string;
  bin?: string;
  readyTimeoutMs?: number;
}

export async function startNatsServer(o: NatsServerOptions = {}): Promise<NatsServer> {
  const host = o.host ?? "127.0.0.1";
  const token = o.token ?? randomBytes(24).toString("hex");
  const workDir = mkdtempSync(join(tmpdir(), "veomni-nats-"));
  const ownStore = o.storeDir === undefined;
  const storeDir = o.storeDir ?? join(workDir, "js");
  const conf = join(workDir, "nats.conf");
  // JSON is valid NATS config syntax; quoting keeps odd paths safe.
  writeFileSync(
    conf,
    `listen: ${JSON.stringify(`${host}:${o.port && o.port > 0 ? o.port : -1}`)}\n` +
      `authorization { token: ${JSON.stringify(token)} }\n` +
      `jetstream { store_dir: ${JSON.stringify(storeDir)} }\n`,
    { mode: 0o600 },
  );
  const proc = Bun.spawn([o.bin ?? "nats-server", "-c", conf], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });

  const port = await waitReady(proc, o.readyTimeoutMs ?? 15_000).catch(async (e) => {
    proc.kill("SIGKILL");
    await proc.exited;
    rmSync(workDir, { recursive: true, force: true });
    throw e;
  });

  const url = `nats://${host}:${port}`;
  return {
    url,
    port,
    token,
    storeDir,
    proc,
    async stop(graceMs = 3000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
        await proc.exited;
        clearTimeout(t);
      }
      rmSync(ownStore ? workDir : conf, { recursive: true, force: true });
    },
  };
}

/** Read stderr until "Server is ready"; return the client port from the "Listening for client connections" line. */
async function waitReady(proc: Subprocess<"ignore", "ignore", "pipe">, timeoutMs: number): Promise<number> {
  const reader = proc.stderr.getReader();
  const dec = new TextDecoder();
  let log = "";
  let port = 0;
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`nats-server exited before ready (code ${proc.exitCode}): ${log.slice(-800)}`);
      log += dec.decode(value, { stream: true });
      const m = /Listening for client connections on [^\s]*:(\d+)/.exec(log);
      if (m) port = Number(m[1]);
      if (port > 0 && log.includes("Server is ready")) break;
    }
  } finally {
    clearTimeout(timer);
  }
  // Keep draining stderr so the server never blocks on a full pipe.
  void (async () => {
    try {
      for (;;) if ((await reader.read()).done) break;
    } catch {
      /* process gone */
    }
  })();
  return port;
}
