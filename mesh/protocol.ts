// Messages between the compute thread (mesh/comm.ts) and the transport worker
// (mesh/transport_worker.ts). Typed arrays here are views on SharedArrayBuffers: posting them
// shares the memory, it does not copy it. Every request gets exactly one done/error reply.
import type { JobConfig } from "./endpoint.ts";
import type { ReduceKind } from "./wire.ts";

export type OpArgs =
  | { kind: "all_reduce"; buf: Float32Array; reduce: ReduceKind }
  | { kind: "reduce_scatter"; out: Float32Array; inp: Float32Array; off: number[]; reduce: ReduceKind }
  // off: byte offsets; inp: this member's shard to copy into out first (null when in place)
  | { kind: "all_gather"; out: Uint8Array; inp: Uint8Array | null; off: number[] }
  | { kind: "broadcast"; buf: Uint8Array; root: number }
  | { kind: "all_to_all"; out: Uint8Array; recvOff: number[]; inp: Uint8Array; sendOff: number[] }
  | { kind: "barrier" };

export type Request =
  | { t: "listen"; id: number; host: string; ports: number[]; handshakeMs: number }
  | { t: "configure"; id: number; cfg: JobConfig; chunkBytes: number }
  | { t: "group"; id: number; name: string; ranks: number[] }
  | { t: "op"; id: number; group: string; args: OpArgs }
  | { t: "close"; id: number };

export type Reply =
  | { t: "done"; id: number; port?: number; wakeFd?: number }
  | { t: "error"; id: number; message: string }
  | { t: "log"; level: "debug" | "info" | "warn" | "error"; msg: string; obj?: object };
