// Collective cases run by test/harness/mesh_rank.ts on real ranks, and their serial
// reference computed in the test process. Inputs are seeded per (case, rank), sizes are
// uneven on purpose (not divisible by the group size, empty segments, multi-chunk with the
// 4 KiB test chunk size), and outputs are compared as hashes of their exact bytes.
import type { CommGroup } from "../../mesh/index.ts";

/** Deterministic f32 values in [-8, 8) for (seed, rank). */
export function gen(seed: number, rank: number, n: number): Float32Array {
  const a = new Float32Array(new SharedArrayBuffer(n * 4));
  let s = (seed * 2654435761 + rank * 40503 + 1) >>> 0;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; // xorshift32
    a[i] = (s / 2 ** 32 - 0.5) * 16;
  }
  return a;
}

export const hash = (a: ArrayBufferView): string =>
  Bun.hash(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).toString(16);

const unevenCounts = (n: number, base: number): number[] => Array.from({ length: n }, (_, i) => base + 37 * i + (i % 2 ? 5 : 0));
const a2aCount = (from: number, to: number): number => ((from * 7 + to * 3) % 5) * 300 + (from === to ? 11 : 0) + (to === 0 ? 1500 : 0);

export const CASES = [
  "all_reduce_sum", "all_reduce_avg", "all_reduce_max_tiny", "reduce_scatter_sum_uneven", "reduce_scatter_input_scratch", "reduce_scatter_avg_padded",
  "all_gather_f32_inplace", "all_gather_bytes", "broadcast_bytes", "all_to_all_f32", "barrier",
] as const;

// ---- run on a rank ----

export async function runCases(g: CommGroup): Promise<Record<string, string>> {
  const n = g.size;
  const r = g.rank;
  const out: Record<string, string> = {};
  let b = gen(1, r, 10007);
  await g.allReduce(b, "sum");
  out.all_reduce_sum = hash(b);
  b = gen(2, r, 5);
  await g.allReduce(b, "avg");
  out.all_reduce_avg = hash(b);
  b = gen(3, r, 3);
  await g.allReduce(b, "max");
  out.all_reduce_max_tiny = hash(b);

  let counts = unevenCounts(n, 1000);
  let res = new Float32Array(new SharedArrayBuffer(counts[r] * 4));
  const rsIn = gen(4, r, counts.reduce((x, y) => x + y));
  await g.reduceScatter(res, rsIn, "sum", counts);
  out.reduce_scatter_sum_uneven = hash(res);
  out.reduce_scatter_input_scratch = hash(rsIn); // the partial sums forwarded from it
  counts = Array(n).fill(Math.ceil(4099 / n)); // padded even shards, FSDP style
  res = new Float32Array(new SharedArrayBuffer(counts[r] * 4));
  await g.reduceScatter(res, gen(5, r, counts[0] * n), "avg", counts);
  out.reduce_scatter_avg_padded = hash(res);

  counts = unevenCounts(n, 900);
  const off = counts.slice(0, r).reduce((x, y) => x + y, 0);
  const flat = new Float32Array(new SharedArrayBuffer(counts.reduce((x, y) => x + y) * 4));
  flat.subarray(off, off + counts[r]).set(gen(6, r, counts[r]));
  await g.allGather(flat, flat.subarray(off, off + counts[r]), counts);
  out.all_gather_f32_inplace = hash(flat);
  const bytes = unevenCounts(n, 3001);
  const bout = new Uint8Array(new SharedArrayBuffer(bytes.reduce((x, y) => x + y)));
  const bin = new Uint8Array(gen(7, r, bytes[r]).buffer, 0, bytes[r]);
  await g.allGather(bout, bin, bytes);
  out.all_gather_bytes = hash(bout);

  const bc = new Uint8Array(gen(8, r, 2500).buffer, 0, 9999);
  await g.broadcast(bc, n - 1);
  out.broadcast_bytes = hash(bc);

  const send = Array.from({ length: n }, (_, i) => a2aCount(r, i));
  const recv = Array.from({ length: n }, (_, i) => a2aCount(i, r));
  const ain = gen(9, r, send.reduce((x, y) => x + y));
  const aout = new Float32Array(new SharedArrayBuffer(recv.reduce((x, y) => x + y) * 4));
  await g.allToAll(aout, ain, send, recv);
  out.all_to_all_f32 = hash(aout);

  await g.barrier();
  out.barrier = "ok";
  return out;
}

// ---- serial reference ----

/** Ring order of mesh/collectives.ts: segment k sums members k+1, k+2, ..., k (mod n). */
function reduceRef(xs: Float32Array[], off: number[], kind: "sum" | "avg" | "max"): Float32Array {
  const n = xs.length;
  const res = new Float32Array(xs[0].length);
  for (let k = 0; k < n; k++) {
    for (let e = off[k]; e < off[k + 1]; e++) {
      let acc = xs[(k + 1) % n][e];
      for (let t = 2; t <= n; t++) {
        const v = xs[(k + t) % n][e];
        acc = kind === "max" ? Math.max(acc, v) : Math.fround(acc + v);
      }
      res[e] = kind === "avg" ? Math.fround(acc / n) : acc;
    }
  }
  return res;
}

const offsets = (c: number[]): number[] => c.reduce((o, x) => [...o, o[o.length - 1] + x], [0]);
const balanced = (len: number, n: number): number[] =>
  offsets(Array.from({ length: n }, (_, i) => Math.floor(len / n) + (i < len % n ? 1 : 0)));
const ranksOf = (n: number): number[] => [...Array(n).keys()];

export function referenceCases(n: number, r: number): Record<string, string> {
  const out: Record<string, string> = {};
  const ar = (seed: number, len: number, kind: "sum" | "avg" | "max"): string =>
    hash(reduceRef(ranksOf(n).map((i) => gen(seed, i, len)), balanced(len, n), kind));
  out.all_reduce_sum = ar(1, 10007, "sum");
  out.all_reduce_avg = ar(2, 5, "avg");
  out.all_reduce_max_tiny = ar(3, 3, "max");

  let counts = unevenCounts(n, 1000);
  let off = offsets(counts);
  let full = reduceRef(ranksOf(n).map((i) => gen(4, i, off[n])), off, "sum");
  out.reduce_scatter_sum_uneven = hash(full.subarray(off[r], off[r + 1]));
  // the input afterwards: segment k (other than r's and r-1's, which start the ring) holds the
  // partial sum x_{k+1} + ... + x_r that rank r forwarded from there
  const scratch = gen(4, r, off[n]);
  for (let k = 0; k < n; k++) {
    if (k === r || k === (r + n - 1) % n) continue;
    const acc = gen(4, (k + 1) % n, off[n]).slice(off[k], off[k + 1]);
    for (let m = (k + 2) % n; ; m = (m + 1) % n) {
      const x = gen(4, m, off[n]).subarray(off[k], off[k + 1]);
      for (let i = 0; i < acc.length; i++) acc[i] = acc[i] + x[i]; // f32 store: the ring's rounding
      if (m === r) break;
    }
    scratch.set(acc, off[k]);
  }
  out.reduce_scatter_input_scratch = hash(scratch);
  counts = Array(n).fill(Math.ceil(4099 / n));
  off = offsets(counts);
  full = reduceRef(ranksOf(n).map((i) => gen(5, i, off[n])), off, "avg");
  out.reduce_scatter_avg_padded = hash(full.subarray(off[r], off[r + 1]));

  counts = unevenCounts(n, 900);
  off = offsets(counts);
  const flat = new Float32Array(off[n]);
  for (let i = 0; i < n; i++) flat.set(gen(6, i, counts[i]), off[i]);
  out.all_gather_f32_inplace = hash(flat);
  counts = unevenCounts(n, 3001);
  off = offsets(counts);
  const bout = new Uint8Array(off[n]);
  for (let i = 0; i < n; i++) bout.set(new Uint8Array(gen(7, i, counts[i]).buffer, 0, counts[i]), off[i]);
  out.all_gather_bytes = hash(bout);

  out.broadcast_bytes = hash(new Uint8Array(gen(8, n - 1, 2500).buffer, 0, 9999));

  const parts: Float32Array[] = [];
  for (let i = 0; i < n; i++) {
    const sendI = ranksOf(n).map((j) => a2aCount(i, j));
    const o = offsets(sendI);
    parts.push(gen(9, i, o[n]).slice(o[r], o[r + 1]));
  }
  const aout = new Float32Array(parts.reduce((x, p) => x + p.length, 0));
  let at = 0;
  for (const p of parts) {
    aout.set(p, at);
    at += p.length;
  }
  out.all_to_all_f32 = hash(aout);
  out.barrier = "ok";
  return out;
}
