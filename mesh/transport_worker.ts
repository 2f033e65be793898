// The transport thread (a Bun Worker): owns the listener, every socket and the collective
// state machines, so communication overlaps the compute thread. The compute thread
// (mesh/comm.ts) posts requests carrying SharedArrayBuffer views and awaits one reply each.
// Message shapes: mesh/protocol.ts.
import { allGather, allReduce, allToAll, barrier, broadcast, reduceScatter, type OpCtx } from "./collectives.ts";
import { crc32cImpl } from "./crc32c.ts";
import { Endpoint, type Log } from "./endpoint.ts";
import type { Group } from "./group.ts";
import type { Reply, Request } from "./protocol.ts";

declare const self: Worker;

let ep: Endpoint | null = null;
const groups = new Map<string, Group>();
let chunkBytes = 512 << 10;

const post = (m: Reply): void => self.postMessage(m);
const log: Log = (level, msg, obj) => post({ t: "log", level, msg, obj });

self.onmessage = (ev: MessageEvent<Request>) => {
  const m = ev.data;
  handle(m).then(
    (r) => post({ t: "done", id: m.id, ...r }),
    (e: Error) => post({ t: "error", id: m.id, message: e.message }),
  );
};

async function handle(m: Request): Promise<{ port: number; wakeFd: number } | undefined> {
  switch (m.t) {
    case "listen":
      ep = await Endpoint.listen(m.host, m.ports, m.handshakeMs, log);
      log("info", `mesh: frame CRC32C: ${crc32cImpl}`, { crc32c: crc32cImpl });
      return { port: ep.port, wakeFd: ep.wakeFd };
    case "configure":
      chunkBytes = m.chunkBytes;
      ep!.configure(m.cfg);
      return;
    case "group":
      groups.set(m.name, await ep!.group(m.name, m.ranks));
      return;
    case "close":
      await ep?.close();
      return;
    case "op":
      await runOp(m);
      return;
  }
}

function runOp(m: Extract<Request, { t: "op" }>): Promise<void> {
  const g = groups.get(m.group);
  if (!g) return Promise.reject(new Error(`mesh: unknown group ${m.group}`));
  const a = m.args;
  return g.run(a.kind, (seq) => {
    const x: OpCtx = { g, seq, chunkBytes };
    switch (a.kind) {
      case "all_reduce":
        return allReduce(x, a.buf, a.reduce);
      case "reduce_scatter":
        return reduceScatter(x, a.inp, a.off, a.out, a.reduce).then(() => {});
      case "all_gather":
        if (a.inp) a.out.set(a.inp, a.off[g.me]); // the caller's shard, unless already in place
        return allGather(x, a.out, a.off);
      case "broadcast":
        return broadcast(x, a.buf, a.root);
      case "all_to_all":
        return allToAll(x, a.out, a.recvOff, a.inp, a.sendOff);
      case "barrier":
        return barrier(x);
    }
  });
}
