// Local worker processes the coordinator spawns itself (`bun actors/worker_main.ts --rank r`).
// The NATS token travels in the environment, not on the command line (visible to `ps`). Each
// child's stdin is a pipe it watches: if the coordinator dies, even by kill -9, the pipe closes
// and the child exits, so nothing is left running. Exits before the job ends are reported.
import type { Subprocess } from "bun";

export interface SpawnOptions {
  natsUrl: string;
  token: string | null;
  job: string;
  outputDir: string | null;
  /** extra environment (threads, log level). */
  env?: Record<string, string>;
}

export interface LocalExit {
  rank: number;
  pid: number;
  code: number | null;
  signal: string | null;
  stderrTail: string;
}

const WORKER_MAIN = new URL("./worker_main.ts", import.meta.url).pathname;
const TAIL = 4096;

export class LocalWorkers {
  private procs = new Map<number, { proc: Subprocess<"pipe", "ignore", "pipe">; tail: string }>();
  private expectedExit = false;

  constructor(private o: SpawnOptions, private onExit: (e: LocalExit) => void) {}

  spawn(rank: number): number {
    const env: Record<string, string> = { ...(process.env as Record<string, string>), ...this.o.env };
    if (this.o.token) env.VEOMNI_NATS_TOKEN = this.o.token;
    if (this.o.outputDir) env.VEOMNI_LOG_DIR = this.o.outputDir;
    const args = [process.execPath, WORKER_MAIN, "--rank", String(rank), "--nats", this.o.natsUrl, "--job", this.o.job, "--exit-with-parent"];
    const proc = Bun.spawn(args, { env, stdin: "pipe", stdout: "ignore", stderr: "pipe" });
    const entry = { proc, tail: "" };
    this.procs.set(rank, entry);
    void (async () => {
      const dec = new TextDecoder();
      for await (const chunk of proc.stderr) entry.tail = (entry.tail + dec.decode(chunk)).slice(-TAIL);
    })().catch(() => {
      // the pipe breaks when the child dies: the tail read so far is what its exit report carries
    });
    void proc.exited.then(() => {
      if (!this.expectedExit) this.onExit({ rank, pid: proc.pid, code: proc.exitCode, signal: proc.signalCode === null ? null : String(proc.signalCode), stderrTail: entry.tail });
    });
    return proc.pid;
  }

  pid(rank: number): number | undefined {
    return this.procs.get(rank)?.proc.pid;
  }

  get ranks(): number[] {
    return [...this.procs.keys()];
  }

  /** Exit codes so far, by rank (null while running). */
  exitCodes(): Map<number, number | null> {
    return new Map([...this.procs].map(([r, e]) => [r, e.proc.exitCode]));
  }

  /** The job is ending: from now on exits are expected. */
  expectExit(): void {
    this.expectedExit = true;
  }

  /** Wait up to `graceMs` for every child to exit on its own, then SIGKILL the rest. Resolves when all are gone. */
  async reap(graceMs: number): Promise<void> {
    this.expectedExit = true;
    const all = [...this.procs.values()].map((e) => e.proc);
    const timer = setTimeout(() => {
      for (const p of all) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    }, graceMs);
    await Promise.all(all.map((p) => p.exited));
    clearTimeout(timer);
  }
}
