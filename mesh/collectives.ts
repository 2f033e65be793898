// Collectives as chunked, pipelined ring algorithms over a Group's links (inside the
// transport worker, on SharedArrayBuffer views owned by the caller until the op resolves).
// Segments: a flat buffer of N elements split by `off` (n+1 prefix offsets, element units):
// member i owns [off[i], off[i+1]) — even, padded, uneven or empty, the FSDP layout.
//
// Reduction order (bit-reproducible, the same on every rank, independent of arrival order):
// segment k is summed around the ring starting at member k+1, i.e.
//   acc = x[k+1]; acc = f32(acc + x[k+2]); ...; acc = f32(acc + x[k])   (indices mod n)
// then avg divides by n once at the owner, and the all-gather phase copies the owner's bytes.
import type { Frame } from "./conn.ts";
import type { Group } from "./group.ts";
import { crcMismatch, FRAME_HEADER, Op, REDUCE_CODE, writeFrameHeader, type ReduceKind } from "./wire.ts";
import { crc32c } from "./crc32c.ts";
import { addDivF32, addF32 } from "./net.ts";

export interface OpCtx {
  g: Group;
  seq: number;
  chunkBytes: number; // payload bytes per frame, a multiple of 4
}

const mod = (a: number, n: number): number => ((a % n) + n) % n;
const nChunks = (bytes: number, c: number): number => Math.max(1, Math.ceil(bytes / c));

/** Prefix offsets of a balanced split of `n` items over `parts` (first ones get the extra). */
export function balancedOffsets(n: number, parts: number): number[] {
  const off = [0];
  for (let i = 0; i < parts; i++) off.push(off[i] + Math.floor(n / parts) + (i < n % parts ? 1 : 0));
  return off;
}

export function offsetsOf(counts: readonly number[]): number[] {
  const off = [0];
  for (const c of counts) off.push(off[off.length - 1] + c);
  return off;
}

/**
 * Frames for `src`, chunk j = src[j*c, (j+1)*c), queued on link i. Zero-copy: the payload is
 * written from the caller's buffer itself (the op resolves only after it reached the kernel,
 * see Group.run), only the 32-byte header is new, filled in just before it is sent.
 */
function sendChunks(
  x: OpCtx, i: number, op: number, step: number, total: number, src: Uint8Array, crcs: readonly number[] | null = null,
): void {
  const k = nChunks(src.length, x.chunkBytes);
  for (let j = 0; j < k; j++) {
    const part = src.subarray(j * x.chunkBytes, Math.min(src.length, (j + 1) * x.chunkBytes));
    const hdr = new Uint8Array(FRAME_HEADER);
    // The payload CRC, unless known (`crcs`, chunk by chunk), is computed when the frame goes
    // to the kernel (Conn.send's prepare), so the kernel then copies it from cache.
    const fill = (): void => writeFrameHeader(hdr, {
      op, step, seq: x.seq, chunk: j, total, len: part.length, payloadCrc: crcs?.[j] ?? crc32c(part),
    });
    x.g.send(i, hdr, undefined, fill);
    if (part.length > 0) x.g.send(i, part);
  }
}

/**
 * Receive `dst.length` bytes in chunks from link i; `each` sees every chunk (then it may forward).
 * `lazy`: frames come with their payload CRC unchecked and `each` must check it (frame.verified).
 */
async function recvChunks(
  x: OpCtx, i: number, op: number, step: number, total: number, dstLen: number,
  each: (payload: Uint8Array, at: number, frame: Frame, chunk: number) => boolean | void, lazy = false,
): Promise<void> {
  const k = nChunks(dstLen, x.chunkBytes);
  for (let j = 0; j < k; j++) {
    const at = j * x.chunkBytes;
    const len = Math.min(dstLen, at + x.chunkBytes) - at;
    const f = await x.g.recv(i, { op, seq: x.seq, step, chunk: j, total, len }, lazy); // waits on peer i
    if (each(f.payload, at, f, j) !== true) x.g.release(i, f); // true: forwarded, released when written
  }
}

/**
 * Post receives for byte ranges `parts` (in the order the peer sends them: step, then chunk)
 * from link i, straight into the destination, all at once so that frames arriving while the
 * collective is busy still skip the frame buffer; `each` runs per chunk, in order, once its
 * payload is in place and checked (it may forward it).
 */
async function recvInto(
  x: OpCtx, i: number, op: number, total: number, parts: { step: number; dst: Uint8Array }[],
  each: (step: number, chunk: number, dst: Uint8Array, payloadCrc: number) => void,
): Promise<void> {
  const posts: { step: number; chunk: number; dst: Uint8Array; p: Promise<number> }[] = [];
  for (const { step, dst } of parts) {
    const k = nChunks(dst.length, x.chunkBytes);
    for (let j = 0; j < k; j++) {
      const d = dst.subarray(j * x.chunkBytes, Math.min(dst.length, (j + 1) * x.chunkBytes));
      const p = x.g.recvInto(i, { op, seq: x.seq, step, chunk: j, total, len: d.length }, d);
      p.catch(() => {}); // the first rejection is awaited below; the rest fail with it
      posts.push({ step, chunk: j, dst: d, p });
    }
  }
  for (const r of posts) each(r.step, r.chunk, r.dst, await r.p);
}

/** Queue header + `payload` (a stable view: the op resolves only once it is written) on link `to`. */
function sendView(x: OpCtx, to: number, op: number, step: number, chunk: number, total: number, payload: Uint8Array, payloadCrc: number): void {
  const hdr = new Uint8Array(FRAME_HEADER);
  writeFrameHeader(hdr, { op, step, seq: x.seq, chunk, total, len: payload.length, payloadCrc });
  x.g.send(to, hdr);
  if (payload.length > 0) x.g.send(to, payload);
}

/**
 * Queue received frame `f` (from member `from`) on link `to` with a new step; `payloadCrc`:
 * unchanged when forwarding as is. Its buffer returns to `from`'s pool once written.
 */
function forward(x: OpCtx, from: number, to: number, f: Frame, op: number, step: number, chunk: number, total: number, payloadCrc = f.h.payloadCrc): true {
  writeFrameHeader(f.buf, { op, step, seq: x.seq, chunk, total, len: f.payload.length, payloadCrc });
  x.g.send(to, f.buf, () => x.g.release(from, f));
  return true;
}

function bytesOf(a: Float32Array, from: number, to: number): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + from * 4, (to - from) * 4);
}

const BLOCK = 16384; // f32 elements (64 KiB): CRC, reduce and CRC a block while it is in L2

const crcPair = [0, 0]; // reduceCrc's result: [CRC of a's bytes (when asked), CRC of d's bytes]

/**
 * d <- a (+) b elementwise (sum, max; avg: the f32 sum divided by `n`), d may alias a or b.
 * Block by block, in one pass over memory: the CRC32C of a's block first (when `checkA`: a is a
 * received payload whose CRC is still to be checked), then the reduction, then the CRC32C of
 * d's block. Returns crcPair.
 */
function reduceCrc(d: Float32Array, a: Float32Array, b: Float32Array, kind: ReduceKind, n: number, checkA: boolean): number[] {
  let ca = 0;
  let cd = 0;
  for (let i = 0; i < d.length; i += BLOCK) {
    const e = Math.min(d.length, i + BLOCK);
    const db = d.subarray(i, e);
    const ab = a.subarray(i, e);
    const bb = b.subarray(i, e);
    if (checkA) ca = crc32c(new Uint8Array(ab.buffer, ab.byteOffset, ab.byteLength), ca);
    if (kind === "max") for (let k = 0; k < db.length; k++) db[k] = Math.max(ab[k], bb[k]);
    else if (kind === "avg") addDivF32(db, ab, bb, n);
    else addF32(db, ab, bb);
    cd = crc32c(new Uint8Array(db.buffer, db.byteOffset, db.byteLength), cd);
  }
  crcPair[0] = ca;
  crcPair[1] = cd;
  return crcPair;
}

/**
 * out (off[me+1]-off[me]) <- reduce over members of data[off[me], off[me+1]).
 * `out` may alias data's own segment (all-reduce). `data` is scratch: the segments of the
 * members other than this one and the one before it end up holding partial sums.
 * Returns the CRC32C of each chunk of `out` (computed with the last add), so an all-gather
 * of `out` that follows needs no pass of its own.
 */
export async function reduceScatter(
  x: OpCtx, data: Float32Array, off: readonly number[], out: Float32Array, kind: ReduceKind,
  op = Op.ReduceScatter | (REDUCE_CODE[kind] << 4),
): Promise<number[] | null> {
  const { g } = x;
  const n = g.size;
  const r = g.me;
  const total = data.length * 4;
  const mine = data.subarray(off[r], off[r + 1]);
  if (n === 1) {
    if (out !== mine) out.set(mine);
    return null;
  }
  const next = mod(r + 1, n);
  const prev = mod(r - 1, n);
  const k0 = mod(r - 1, n);
  const crcs: number[] = [];
  sendChunks(x, next, op, 0, total, bytesOf(data, off[k0], off[k0 + 1]));
  for (let s = 0; s < n - 1; s++) {
    const k = mod(r - 2 - s, n); // segment arriving at step s: partial sum of members k+1..r-1
    const last = s === n - 2; // then k === r and the sum is complete
    await recvChunks(x, prev, op, s, total, (off[k + 1] - off[k]) * 4, (payload, at, frame, j) => {
      const acc = new Float32Array(payload.buffer, payload.byteOffset, payload.length >> 2);
      const loc = data.subarray(off[k] + at / 4, off[k] + at / 4 + acc.length);
      const check = !frame.verified; // its CRC is checked in the same pass as the add
      // Last step: the add goes straight into `out` (which may be loc itself: element i is
      // read first) and avg divides the f32 sum once, here at the owner. Before: the partial
      // sum is written over this member's own contribution `loc` (read by this add only) and
      // goes on from there, with a new payload CRC, to the next step; the frame buffer returns
      // to the pool at once. Forwarding the frame itself kept it until written: up to two
      // segments of pooled 512 KiB frames per reduce-scatter, garbage past the pool's 32 (a
      // step's reduce-scatters grew a rank's memory by ~90 MiB, issue 17).
      const dst = last ? out.subarray(at / 4, at / 4 + acc.length) : loc;
      const [got, crc] = reduceCrc(dst, acc, loc, last || kind !== "avg" ? kind : "sum", n, check);
      if (check && got !== frame.h.payloadCrc) throw x.g.failLink(prev, crcMismatch(frame.h, got));
      if (last) crcs[j] = crc;
      else sendView(x, next, op, s + 1, j, total, new Uint8Array(loc.buffer, loc.byteOffset, loc.byteLength), crc);
    }, true);
  }
  return crcs;
}

/**
 * out (bytes) <- every member's segment out[off[i], off[i+1]) (byte offsets); this member's
 * segment must already be in place. Ring: member r forwards what it got from r-1.
 */
export async function allGather(
  x: OpCtx, out: Uint8Array, off: readonly number[], op: number = Op.AllGather, stepBase = 0, total = out.length,
  mineCrcs: readonly number[] | null = null,
): Promise<void> {
  const { g } = x;
  const n = g.size;
  const r = g.me;
  if (n === 1) return;
  const next = mod(r + 1, n);
  const prev = mod(r - 1, n);
  sendChunks(x, next, op, stepBase, total, out.subarray(off[r], off[r + 1]), mineCrcs);
  // Step s brings segment r-1-s from prev into its place in `out`; all but the last step's
  // chunks go on to next from there (zero-copy, CRC unchanged).
  const parts = [...Array(n - 1).keys()].map((s) => {
    const k = mod(r - 1 - s, n);
    return { step: stepBase + s, dst: out.subarray(off[k], off[k + 1]) };
  });
  await recvInto(x, prev, op, total, parts, (step, j, dst, crc) => {
    if (step < stepBase + n - 2) sendView(x, next, op, step + 1, j, total, dst, crc);
  });
}

/** buf (N) <- reduce over members of buf: reduce-scatter then all-gather, in place. */
export async function allReduce(x: OpCtx, buf: Float32Array, kind: ReduceKind): Promise<void> {
  const n = x.g.size;
  const off = balancedOffsets(buf.length, n);
  const op = Op.AllReduce | (REDUCE_CODE[kind] << 4);
  const crcs = await reduceScatter(x, buf, off, buf.subarray(off[x.g.me], off[x.g.me + 1]), kind, op);
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  await allGather(x, bytes, off.map((o) => o * 4), op, n - 1, buf.byteLength, crcs);
}

/** buf (bytes) <- root's buf. Ring from root; the step field carries the root so a mismatch is caught. */
export async function broadcast(x: OpCtx, buf: Uint8Array, root: number): Promise<void> {
  const { g } = x;
  const n = g.size;
  if (n === 1) return;
  const pos = mod(g.me - root, n);
  const next = mod(g.me + 1, n);
  if (pos === 0) return sendChunks(x, next, Op.Broadcast, root, buf.length, buf);
  await recvChunks(x, mod(g.me - 1, n), Op.Broadcast, root, buf.length, buf.length, (payload, at, frame, j) => {
    buf.set(payload, at);
    if (pos < n - 1) return forward(x, mod(g.me - 1, n), next, frame, Op.Broadcast, root, j, buf.length);
  });
}

/**
 * out (bytes) <- all-to-all: member i's inp[sendOff_i[me], ...) lands at out[recvOff[i], ...).
 * Direct pairwise links; each pair checks that the sender's size equals the receiver's.
 */
export async function allToAll(
  x: OpCtx, out: Uint8Array, recvOff: readonly number[], inp: Uint8Array, sendOff: readonly number[],
): Promise<void> {
  const { g } = x;
  const me = g.me;
  for (let i = 0; i < g.size; i++) {
    if (i !== me) sendChunks(x, i, Op.AllToAll, 0, sendOff[i + 1] - sendOff[i], inp.subarray(sendOff[i], sendOff[i + 1]));
  }
  out.set(inp.subarray(sendOff[me], sendOff[me + 1]), recvOff[me]);
  const peers = [...Array(g.size).keys()].filter((i) => i !== me);
  await Promise.all(peers.map((i) => {
    const len = recvOff[i + 1] - recvOff[i];
    return recvInto(x, i, Op.AllToAll, len, [{ step: 0, dst: out.subarray(recvOff[i], recvOff[i + 1]) }], () => {});
  }));
}

/** Returns once every member has entered the barrier: an empty frame to and from each peer. */
export async function barrier(x: OpCtx): Promise<void> {
  const { g } = x;
  const peers = [...Array(g.size).keys()].filter((i) => i !== g.me);
  for (const i of peers) sendChunks(x, i, Op.Barrier, 0, 0, new Uint8Array(0));
  await Promise.all(peers.map((i) => recvChunks(x, i, Op.Barrier, 0, 0, 0, () => {})));
}
