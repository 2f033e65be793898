// The embedded control plane: a private `nats-server -js` on loopback with a random token and a
// temporary store, owned by the coordinator (or a test) and stopped with it. It can also join a
// cluster (routes between servers; tests start three to check a job survives losing one).
// The token and store go in a 0600 config file, not on the command line (visible to `ps`). Readiness and the port
// come from the server's own log lines on stderr (event-driven, no polling).
//
// Nothing outlives its owner, even on kill -9: the server runs under `setpriv --pdeathsig KILL`
// (Linux: the kernel kills it when the owning process dies) and in its own session (a terminal's
// Ctrl-C reaches the coordinator, which then stops the server in order, not the server first).
// A watchdog shell, also in its own session, holds a pipe from the owner: at EOF (the owner is
// gone, however it died) it stops the server if it still runs and removes the temp dir (token,
// store) and the files named in `alsoRemove` (OUTPUT_DIR/.nats).
import { existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Subprocess } from "bun";

export interface NatsServer {
  url: string;
  port: number;
  token: string;
  storeDir: string;
  /** temp dir of the config file (token) and, by default, the store; removed when the server ends. */
  dir: string;
  proc: Subprocess;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone and its temp dir (and `alsoRemove`) removed. */
  stop(graceMs?: number): Promise<void>;
}

export interface NatsServerOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  token?: string;
  /** JetStream store (kept); absent: a fresh one in the temp dir, removed with it. */
  storeDir?: string;
  bin?: string;
  readyTimeoutMs?: number;
  /** files removed with the temp dir when the server stops or its owner dies (OUTPUT_DIR/.nats). */
  alsoRemove?: string[];
  /** server_name (each server of a JetStream cluster needs its own). */
  name?: string;
  /** Join a cluster: its name, this server's route port, the other servers' route URLs (nats-route://host:port). */
  cluster?: { name: string; port: number; routes: string[] };
}

/** `setpriv --pdeathsig` where util-linux has it (Linux); elsewhere the watchdog alone stops the server. */
const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p)) ?? null;

// $1: server pid; the rest: paths to remove. `read` returns at EOF: the owner closed its end or died.
const WATCHDOG = `while read -r _; do :; done
kill -TERM "$1" 2>/dev/null
i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
kill -KILL "$1" 2>/dev/null
shift; rm -rf "$@"`;

export async function startNatsServer(o: NatsServerOptions = {}): Promise<NatsServer> {
  const host = o.host ?? "127.0.0.1";
  const token = o.token ?? randomBytes(24).toString("hex");
  const workDir = mkdtempSync(join(tmpdir(), "veomni-nats-"));
  const storeDir = o.storeDir ?? join(workDir, "js");
  const conf = join(workDir, "nats.conf");
  // JSON is valid NATS config syntax; quoting keeps odd paths safe.
  writeFileSync(
    conf,
    `listen: ${JSON.stringify(`${host}:${o.port && o.port > 0 ? o.port : -1}`)}\n` +
      // timeout: seconds a client has to authenticate (default 2): a loaded host must not drop its own workers
      `authorization { token: ${JSON.stringify(token)}, timeout: 10 }\n` +
      `jetstream { store_dir: ${JSON.stringify(storeDir)} }\n` +
      (o.name ? `server_name: ${JSON.stringify(o.name)}\n` : "") +
      (o.cluster
        ? `cluster { name: ${JSON.stringify(o.cluster.name)}, listen: ${JSON.stringify(`${host}:${o.cluster.port}`)}, routes: ${JSON.stringify(o.cluster.routes)} }\n`
        : ""),
    { mode: 0o600 },
  );
  const cmd = [o.bin ?? "nats-server", "-c", conf];
  const proc = Bun.spawn(SETPRIV ? [SETPRIV, "--pdeathsig", "KILL", ...cmd] : cmd, { stdin: "ignore", stdout: "ignore", stderr: "pipe", detached: true });
  const removes = [workDir, ...(o.alsoRemove ?? [])];
  const watchdog = Bun.spawn(["sh", "-c", WATCHDOG, "veomni-nats-watchdog", String(proc.pid), ...removes], { stdin: "pipe", stdout: "ignore", stderr: "ignore", detached: true });
  // However the server ends (stop, a crash, a test killing it): remove its files, release the watchdog.
  const cleaned = proc.exited.then(async () => {
    for (const p of removes) rmSync(p, { recursive: true, force: true });
    watchdog.stdin.end();
    await watchdog.exited;
  });

  const port = await waitReady(proc, o.readyTimeoutMs ?? 15_000).catch(async (e) => {
    proc.kill("SIGKILL");
    await cleaned;
    throw e;
  });

  const url = `nats://${host}:${port}`;
  return {
    url,
    port,
    token,
    storeDir,
    dir: workDir,
    proc,
    async stop(graceMs = 3000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
        await proc.exited;
        clearTimeout(t);
      }
      await cleaned;
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
