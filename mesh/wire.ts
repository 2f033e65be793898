// Wire protocol v1 of the mesh data plane (documented in mesh/README.md). Pure encode/decode
// and checks, no sockets: the transport (mesh/conn.ts) and the bad-peer tests both use these.
//
// Handshake message: 12-byte header then a JSON body of at most HS_MAX_BODY bytes.
//   0 magic u32 "VOHS" | 4 version u8 | 5 type u8 | 6 reserved u16 | 8 bodyLen u32
// Data frame: 32-byte header then `len` payload bytes. All integers little-endian.
//   0 magic u32 "VEOM" | 4 version u8 | 5 op u8 | 6 step u16 | 8 seq u32 | 12 chunk u32
//   16 total u32 (bytes of the whole op on this link, checked against the receiver's own)
//   20 len u32 | 24 payloadCrc u32 (CRC32C of the payload) | 28 headerCrc u32 (CRC32C of 0..28)
import { createHmac, timingSafeEqual } from "node:crypto";
import { crc32c } from "./crc32c.ts";

export const WIRE_VERSION = 1;
export const HS_MAGIC = 0x53484f56; // "VOHS" as little-endian bytes
export const FRAME_MAGIC = 0x4d4f4556; // "VEOM"
export const HS_HEADER = 12;
export const HS_MAX_BODY = 1024;
export const FRAME_HEADER = 32;

export enum HsType {
  Hello = 1, // dialer -> acceptor: who I am, which group, my nonce
  Challenge = 2, // acceptor -> dialer: its nonce + MAC proving it holds the secret
  Auth = 3, // dialer -> acceptor: MAC proving the dialer holds the secret
  Ok = 4, // acceptor -> dialer: link open, frames follow
  Reject = 5, // either way, then close: { reason }
}

/** Collective op codes; the reduce kind rides in the high nibble (checked like the op). */
export enum Op {
  Broadcast = 1,
  AllGather = 2,
  ReduceScatter = 3,
  AllReduce = 4,
  AllToAll = 5,
  Barrier = 6,
  Abort = 15, // payload: UTF-8 reason; fails the group on the receiver
}
export type ReduceKind = "sum" | "avg" | "max";
export const REDUCE_CODE: Record<ReduceKind, number> = { sum: 0, avg: 1, max: 2 };
const OP_NAMES: Record<number, string> = {
  1: "broadcast", 2: "all_gather", 3: "reduce_scatter", 4: "all_reduce", 5: "all_to_all", 6: "barrier", 15: "abort",
};
const REDUCE_NAMES = ["sum", "avg", "max"];

/** "all_reduce(avg)" for an op byte as sent on the wire. */
export function opName(code: number): string {
  const base = OP_NAMES[code & 0x0f] ?? `op#${code & 0x0f}`;
  const r = code >> 4;
  return r === 0 && (code & 0x0f) !== Op.ReduceScatter && (code & 0x0f) !== Op.AllReduce
    ? base
    : `${base}(${REDUCE_NAMES[r] ?? `reduce#${r}`})`;
}

/** The text of a payload CRC failure (the transport prefixes the peer). */
export function crcMismatch(h: FrameHeader, got: number): string {
  return `payload CRC32C mismatch in ${opName(h.op)} seq ${h.seq} chunk ${h.chunk}: ` +
    `got 0x${got.toString(16)}, header says 0x${h.payloadCrc.toString(16)}`;
}

export interface FrameHeader {
  op: number; // Op | reduce << 4
  step: number; // ring step (all_reduce: reduce-scatter steps then all-gather steps)
  seq: number; // op sequence number within the group, from 0
  chunk: number; // chunk index within the step
  total: number; // bytes of the whole op on this link
  len: number; // payload bytes
  payloadCrc: number;
}

/** Write the 32-byte header into `buf[0, 32)`; the payload at buf[32, 32+len) must be final. */
export function writeFrameHeader(buf: Uint8Array, h: FrameHeader): void {
  const v = new DataView(buf.buffer, buf.byteOffset, FRAME_HEADER);
  v.setUint32(0, FRAME_MAGIC, true);
  v.setUint8(4, WIRE_VERSION);
  v.setUint8(5, h.op);
  v.setUint16(6, h.step, true);
  v.setUint32(8, h.seq, true);
  v.setUint32(12, h.chunk, true);
  v.setUint32(16, h.total, true);
  v.setUint32(20, h.len, true);
  v.setUint32(24, h.payloadCrc, true);
  v.setUint32(28, crc32c(buf, 0, 0, 28), true);
}

/** A whole frame (header + copy of payload), CRC computed here. */
export function encodeFrame(h: Omit<FrameHeader, "len" | "payloadCrc">, payload: Uint8Array): Uint8Array {
  const buf = new Uint8Array(FRAME_HEADER + payload.length);
  buf.set(payload, FRAME_HEADER);
  writeFrameHeader(buf, { ...h, len: payload.length, payloadCrc: crc32c(buf, 0, FRAME_HEADER) });
  return buf;
}

/**
 * Parse and check a 32-byte header BEFORE anything is allocated for its payload.
 * Throws on unknown magic/version, header CRC, or len above `maxLen`.
 */
export function readFrameHeader(hdr: Uint8Array, maxLen: number): FrameHeader {
  const v = new DataView(hdr.buffer, hdr.byteOffset, FRAME_HEADER);
  const magic = v.getUint32(0, true);
  if (magic !== FRAME_MAGIC) throw new Error(`bad frame magic 0x${magic.toString(16)}, expected 0x${FRAME_MAGIC.toString(16)}`);
  const version = v.getUint8(4);
  if (version !== WIRE_VERSION) throw new Error(`frame version ${version}, expected ${WIRE_VERSION}`);
  const hcrc = v.getUint32(28, true);
  const want = crc32c(hdr, 0, 0, 28);
  if (hcrc !== want) throw new Error(`frame header CRC32C 0x${hcrc.toString(16)} != computed 0x${want.toString(16)}`);
  const len = v.getUint32(20, true);
  if (len > maxLen) throw new Error(`frame length ${len} B above the limit ${maxLen} B`);
  return {
    op: v.getUint8(5), step: v.getUint16(6, true), seq: v.getUint32(8, true), chunk: v.getUint32(12, true),
    total: v.getUint32(16, true), len, payloadCrc: v.getUint32(24, true),
  };
}

// ---- handshake ----

export interface Hello { job: string; epoch: number; group: string; from: number; to: number; nonce: string }
export interface Challenge { nonce: string; mac: string }
export interface Auth { mac: string }
export interface Reject { reason: string }

export function encodeHs(type: HsType, body: object): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(body));
  if (json.length > HS_MAX_BODY) throw new Error(`handshake body ${json.length} B above ${HS_MAX_BODY} B`);
  const buf = new Uint8Array(HS_HEADER + json.length);
  const v = new DataView(buf.buffer);
  v.setUint32(0, HS_MAGIC, true);
  v.setUint8(4, WIRE_VERSION);
  v.setUint8(5, type);
  v.setUint32(8, json.length, true);
  buf.set(json, HS_HEADER);
  return buf;
}

/** Check a 12-byte handshake header; returns type and body length (checked before allocation). */
export function readHsHeader(hdr: Uint8Array): { type: HsType; len: number } {
  const v = new DataView(hdr.buffer, hdr.byteOffset, HS_HEADER);
  const magic = v.getUint32(0, true);
  if (magic !== HS_MAGIC) throw new Error(`bad handshake magic 0x${magic.toString(16)}, expected 0x${HS_MAGIC.toString(16)}`);
  const version = v.getUint8(4);
  if (version !== WIRE_VERSION) throw new Error(`handshake version ${version}, expected ${WIRE_VERSION}`);
  const type = v.getUint8(5);
  if (type < HsType.Hello || type > HsType.Reject) throw new Error(`unknown handshake message type ${type}`);
  const len = v.getUint32(8, true);
  if (len > HS_MAX_BODY) throw new Error(`handshake body length ${len} B above the limit ${HS_MAX_BODY} B`);
  return { type, len };
}

/**
 * The MAC binds everything both sides agreed: protocol version, role, job, epoch, group,
 * both ranks and both nonces. The acceptor signs role "acceptor", the dialer "dialer", so a
 * reflected MAC is useless.
 */
export function handshakeMac(secret: string, role: "acceptor" | "dialer", h: Hello, acceptorNonce: string): string {
  const transcript = [`veomni-mesh/${WIRE_VERSION}`, role, h.job, h.epoch, h.group, h.from, h.to, h.nonce, acceptorNonce].join("|");
  return createHmac("sha256", secret).update(transcript).digest("hex");
}

export function macEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}
