// Test-side driver for test/harness/mesh_rank.ts processes: spawn, rendezvous (collect each
// listener address, then send everyone the table), wait on their JSON-line events (no
// sleeps), and kill whatever is left.
import type { Subprocess } from "bun";
import { join } from "node:path";
import type { RankConfig } from "../harness/mesh_rank.ts";

const HARNESS = join(import.meta.dir, "..", "harness", "mesh_rank.ts");

export type Ev = { rank: number; ev: string; [k: string]: unknown };

export class RankProc {
  readonly events: Ev[] = [];
  readonly exited: Promise<number>;
  private waiters: { pred: (e: Ev) => boolean; resolve: (e: Ev) => void }[] = [];

  constructor(readonly cfg: RankConfig, readonly proc: Subprocess<"pipe", "pipe", "inherit">) {
    this.exited = proc.exited;
    void this.read();
  }

  private async read(): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of this.proc.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.startsWith("{")) continue;
        const e = JSON.parse(line) as Ev;
        this.events.push(e);
        this.waiters = this.waiters.filter((w) => (w.pred(e) ? (w.resolve(e), false) : true));
      }
    }
  }

  /** The first event (already seen or future) matching `pred`; rejects if the process exits first. */
  next(pred: (e: Ev) => boolean): Promise<Ev> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return Promise.race([
      new Promise<Ev>((resolve) => this.waiters.push({ pred, resolve })),
      this.exited.then(async (code) => {
        await Bun.sleep(0); // let the reader drain the last lines
        const late = this.events.find(pred);
        if (late) return late;
        throw new Error(`rank ${this.cfg.rank} exited (${code}) before the awaited event; events: ${JSON.stringify(this.events)}`);
      }),
    ]);
  }

  on(ev: string): Promise<Ev> {
    return this.next((e) => e.ev === ev);
  }

  send(o: object): void {
    this.proc.stdin.write(JSON.stringify(o) + "\n");
    this.proc.stdin.flush();
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
  }
}

export const BASE: Omit<RankConfig, "rank" | "worldSize" | "script"> = {
  secret: "s3cret-job-key", jobId: "job-test", epoch: 3, deadlineMs: 15000, handshakeMs: 5000, chunkBytes: 4096,
};

/** Spawn n ranks and wait until each listens; returns them with the rendezvous table. */
export async function spawnRanks(
  n: number, script: RankConfig["script"], extra: Partial<RankConfig> = {}, live?: RankProc[],
): Promise<{ procs: RankProc[]; table: string[] }> {
  const procs: RankProc[] = [];
  for (let rank = 0; rank < n; rank++) {
    const cfg: RankConfig = { ...BASE, ...extra, rank, worldSize: n, script };
    const proc = Bun.spawn([process.execPath, HARNESS, JSON.stringify(cfg)], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
    const p = new RankProc(cfg, proc);
    procs.push(p);
    live?.push(p);
  }
  const table = (await Promise.all(procs.map((p) => p.on("listening")))).map((e) => String(e.address));
  return { procs, table };
}

/** Spawn, rendezvous, and return the processes (the table is sent to all). */
export async function startRanks(n: number, script: RankConfig["script"], extra: Partial<RankConfig> = {}, live?: RankProc[]): Promise<RankProc[]> {
  const { procs, table } = await spawnRanks(n, script, extra, live);
  for (const p of procs) p.send({ table });
  return procs;
}

export function killAll(procs: RankProc[]): void {
  for (const p of procs) p.kill();
}
