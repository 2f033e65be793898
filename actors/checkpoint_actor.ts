// The checkpoint actor of a worker: one save at a time through its mailbox. A save stages this
// rank's state (a copy, so training goes on) and hands it to the async writer thread
// (checkpoint/); the durable promise resolves with the rank's report, which the
// worker forwards to the coordinator, who commits once every rank of the epoch reported.
import { RankCheckpointer, type Checkpointable } from "../checkpoint/index.ts";
import { Actor } from "./mailbox.ts";

export interface CheckpointActorOptions {
  outputDir: string;
  rank: number;
  worldSize: number;
  /** DDP: whole units on every rank (each saves a 1/world share); FSDP: each rank its shard. */
  replicated: boolean;
}

type Msg = { kind: "save"; done: number; epoch: number } | { kind: "load"; dir: string };

export class CheckpointActor {
  private rc: RankCheckpointer;
  private box: Actor<Msg, { durable: Promise<unknown> } | number>;

  constructor(o: CheckpointActorOptions, private state: Checkpointable) {
    this.rc = new RankCheckpointer(o);
    this.box = new Actor<Msg, { durable: Promise<unknown> } | number>("checkpoint", async (m) => {
      switch (m.kind) {
        case "save": {
          const t = await this.rc.save(m.done, this.state, m.epoch);
          return { durable: t.durable };
        }
        case "load":
          return this.rc.load(m.dir, this.state);
      }
    });
  }

  /** Stage the state after `done` steps, files named with the job's `epoch` (the worker's, current
   *  when the save is commanded: after an adoption the new one), so a fenced-out writer of an older
   *  epoch cannot clobber them; the inner promise resolves when this rank's files are durable. */
  async save(done: number, epoch: number): Promise<{ durable: Promise<unknown> }> {
    return (await this.box.ask({ kind: "save", done, epoch })) as { durable: Promise<unknown> };
  }

  /** Load a committed checkpoint (any saved world size); returns its step. */
  async load(dir: string): Promise<number> {
    return (await this.box.ask({ kind: "load", dir })) as number;
  }

  close(): Promise<void> {
    this.box.stop("closing");
    return this.rc.close();
  }
}
