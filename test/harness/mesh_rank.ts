// One rank of a mesh test, as a real process (spawned by test/dist/mesh_*.test.ts).
// argv[2]: JSON RankConfig. Talks JSON lines: prints {ev:"listening", address} first, reads
// one line {table} from stdin (the rendezvous), then runs its script and prints events.
// Exits 0 when the script is done, 1 with {ev:"error", message} when the mesh failed.
import { Comm, deviceMesh, type CommGroup } from "../../mesh/index.ts";
import { gen, hash, runCases } from "../dist/mesh_cases.ts";

export interface RankConfig {
  rank: number;
  worldSize: number;
  script: "cases" | "mesh2x2" | "loop" | "mismatch" | "stall" | "victim" | "pair";
  secret: string;
  jobId: string;
  epoch: number;
  deadlineMs: number;
  handshakeMs: number;
  chunkBytes: number;
  badRank?: number; // mismatch, stall: which rank misbehaves
  mode?: "op" | "size"; // mismatch: wrong op or wrong size
  groups?: string[]; // victim: groups to form with rank 0, one after another
}

const cfg = JSON.parse(process.argv[2]) as RankConfig;
const say = (o: object): void => console.log(JSON.stringify({ rank: cfg.rank, ...o }));
const log = (_o: object, msg: string): void => say({ ev: "log", msg });
const logger = { debug: log, info: log, warn: log, error: log };

const scripts: Record<RankConfig["script"], (c: Comm) => Promise<void>> = {
  async cases(c) {
    say({ ev: "result", res: await runCases(await c.world()) });
  },
  async mesh2x2(c) {
    const r = cfg.rank;
    const m = deviceMesh({ dp_shard: 2, tp: 2 }, 4);
    // Formed concurrently, used concurrently: each op of one group overlaps the other's.
    const [tp, dp] = await Promise.all([
      c.group(m.groupOf(r, ["tp"]), m.groupName(r, ["tp"])),
      c.group(m.groupOf(r, ["dp_shard"]), m.groupName(r, ["dp_shard"])),
    ]);
    const a = gen(20, r, 30001);
    const b = gen(21, r, 20011);
    for (let i = 0; i < 3; i++) await Promise.all([tp.allReduce(a, "sum"), dp.allReduce(b, "avg")]);
    say({ ev: "result", res: { tp: hash(a), dp: hash(b) } });
  },
  async loop(c) {
    const g = await c.world();
    const buf = gen(10, cfg.rank, 1 << 18);
    for (let i = 0; ; i++) {
      await g.allReduce(buf, "avg");
      say({ ev: "iter", i });
    }
  },
  async mismatch(c) {
    const g = await c.world();
    const bad = cfg.rank === cfg.badRank;
    const buf = gen(11, cfg.rank, bad && cfg.mode === "size" ? 5003 : 5000);
    if (bad && cfg.mode === "op") await g.broadcast(buf, 0);
    else await g.allReduce(buf, "sum");
  },
  async stall(c) {
    const g = await c.world();
    say({ ev: "joined" });
    if (cfg.rank === cfg.badRank) await new Promise(() => {}); // alive, linked, never sends
    const t0 = performance.now();
    await g.allReduce(gen(13, cfg.rank, 100), "sum").catch((e) => {
      say({ ev: "stalled", ms: performance.now() - t0 }); // this rank's own clock: the test process may lag
      throw e;
    });
  },
  async victim(c) {
    for (const name of cfg.groups ?? []) {
      try {
        const g = await c.group([0, 1], name);
        const buf = gen(12, cfg.rank, 5000);
        await g.allReduce(buf, "sum");
        say({ ev: "group_result", name, hash: hash(buf) });
      } catch (e) {
        say({ ev: "group_error", name, message: (e as Error).message });
      }
    }
  },
  async pair(c) {
    const g = await c.world();
    const buf = gen(30, cfg.rank, 3000);
    await g.allReduce(buf, "sum");
    say({ ev: "result", res: { pair: hash(buf) } });
  },
};

async function main(): Promise<void> {
  const comm = await Comm.listen({ rank: cfg.rank, host: "127.0.0.1", handshakeMs: cfg.handshakeMs, logger });
  say({ ev: "listening", address: comm.address });
  const lines = console[Symbol.asyncIterator]();
  const first = await lines.next();
  const { table } = JSON.parse(String(first.value)) as { table: string[] };
  try {
    await comm.start({
      worldSize: cfg.worldSize, table, secret: cfg.secret, jobId: cfg.jobId, epoch: cfg.epoch,
      deadlineMs: cfg.deadlineMs, chunkBytes: cfg.chunkBytes,
    });
    await scripts[cfg.script](comm);
  } catch (e) {
    say({ ev: "error", message: (e as Error).message });
    process.exit(1);
  }
  say({ ev: "done" });
  await comm.close();
  process.exit(0);
}

void main();

export type { CommGroup };
