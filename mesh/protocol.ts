// Messages between the compute thread (mesh/comm.ts) and the transport worker
// (mesh/transport_worker.ts). Every request gets exactly one done/error reply.
//
// Tensors travel as Refs: byte ranges of SharedArrayBuffers the worker was given once (an op's
// `adopt`) and keeps by number until the compute thread's buffer is garbage (a later op's
// `forget`). Posting the buffer itself with every op would share the memory too, but each
// arrival makes the worker's heap count the whole buffer as newly allocated memory, and that
// drives its garbage collector: ~1 ms of GC per op and rank at 64 MiB (docs/bench/mesh.md).
import type { JobConfig } from "./endpoint.ts";
import type { ReduceKind } from "./wire.ts";

/** Bytes [off, off+len) of the SharedArrayBuffer the worker knows as `buf`. */
export interface Ref {
  buf: number;
  off: number;
  len: number;
}

export type OpArgs =
  | { kind: "all_reduce"; buf: Ref; reduce: ReduceKind } // f32
  | { kind: "reduce_scatter"; out: Ref; inp: Ref; off: number[]; reduce: ReduceKind } // f32; off in elements
  // off: byte offsets; inp: this member's shard to copy into out first (null when in place)
  | { kind: "all_gather"; out: Ref; inp: Ref | null; off: number[] }
  | { kind: "broadcast"; buf: Ref; root: number }
  | { kind: "all_to_all"; out: Ref; recvOff: number[]; inp: Ref; sendOff: number[] }
  | { kind: "barrier" };

export type Request =
  | { t: "listen"; id: number; host: string; ports: number[]; handshakeMs: number }
  | { t: "configure"; id: number; cfg: JobConfig; chunkBytes: number }
  | { t: "group"; id: number; name: string; ranks: number[] }
  | { t: "op"; id: number; group: string; args: OpArgs; adopt: [number, SharedArrayBuffer][]; forget: number[] }
  | { t: "close"; id: number };

export type Reply =
  | { t: "done"; id: number; port?: number; wakeFd?: number }
  | { t: "error"; id: number; message: string }
  | { t: "log"; level: "debug" | "info" | "warn" | "error"; msg: string; obj?: object };
