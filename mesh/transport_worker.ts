// The transport thread (a Bun Worker): owns the listener, every socket and the collective
// state machines, so communication overlaps the compute thread. The compute thread
// (mesh/comm.ts) posts requests carrying SharedArrayBuffer views and awaits one reply each.
// Message shapes: mesh/protocol.ts.
import { allGather, allReduce, allToAll, barrier, broadcast, reduceScatter, type OpCtx } from "./collectives.ts";
import { crc32cImpl } from "./crc32c.ts";
import { Endpoint, type Log } from "./endpoint.ts";
import type { Group } from "./group.ts";
import type { Ref, Reply, Request } from "./protocol.ts";

declare const self: Worker;

let ep: Endpoint | null = null;
const groups = new Map<string, Group>();
let chunkBytes = 512 << 10;
const buffers = new Map<number, SharedArrayBuffer>(); // the compute thread's, by number (protocol.ts)
// Bytes of forgotten buffers since the last collection here. This heap is small and its
// collector does not know the caller dropped them, so it would keep up to ~1 GiB of them alive
// for a while (24 x 64 MiB measured); past this much it collects at once (a few ms).
const COLLECT_AFTER = 256 << 20;
let forgotten = 0;

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

function buffer(r: Ref): SharedArrayBuffer {
  const b = buffers.get(r.buf);
  if (!b) throw new Error(`mesh: buffer #${r.buf} is unknown to the transport (never given, or forgotten)`);
  return b;
}

function bytes(r: Ref): Uint8Array {
  return new Uint8Array(buffer(r), r.off, r.len);
}

function f32(r: Ref): Float32Array {
  return new Float32Array(buffer(r), r.off, r.len >> 2);
}

function runOp(m: Extract<Request, { t: "op" }>): Promise<void> {
  for (const [id, sab] of m.adopt) buffers.set(id, sab);
  for (const id of m.forget) {
    forgotten += buffers.get(id)?.byteLength ?? 0;
    buffers.delete(id); // ops under way hold their own views
  }
  if (forgotten >= COLLECT_AFTER) {
    forgotten = 0;
    Bun.gc(true);
  }
  const g = groups.get(m.group);
  if (!g) return Promise.reject(new Error(`mesh: unknown group ${m.group}`));
  const a = m.args;
  return g.run(a.kind, (seq) => {
    const x: OpCtx = { g, seq, chunkBytes };
    switch (a.kind) {
      case "all_reduce":
        return allReduce(x, f32(a.buf), a.reduce);
      case "reduce_scatter":
        return reduceScatter(x, f32(a.inp), a.off, f32(a.out), a.reduce).then(() => {});
      case "all_gather": {
        const out = bytes(a.out);
        if (a.inp) out.set(bytes(a.inp), a.off[g.me]); // the caller's shard, unless already in place
        return allGather(x, out, a.off);
      }
      case "broadcast":
        return broadcast(x, bytes(a.buf), a.root);
      case "all_to_all":
        return allToAll(x, bytes(a.out), a.recvOff, bytes(a.inp), a.sendOff);
      case "barrier":
        return barrier(x);
    }
  });
}
