// FSDP's buffer ranges (parallel/fsdp_buffers.ts): first fit, freed neighbours merge, a freed large
// buffer serves several smaller requests, small requests never split a large buffer, and the
// high-water mark is what was alive at once (the tied-embedding pattern of a step).
import { expect, test } from "bun:test";
import { createCpuKernels } from "../../kernels/index.ts";
import { FsdpBuffers } from "../../parallel/fsdp_buffers.ts";

const k = createCpuKernels({ threads: 1 });

test("one step's pattern: embedding 100, layers 30, head 2 -> 100 + 30 + 2 elements, not 100 x 2 + 30 x 4", () => {
  const b = new FsdpBuffers(k, 100);
  const L = 30, E = 100;
  // forward: layer params with prefetch, released in turn
  let cur = b.acquire(L);
  for (let l = 1; l < 4; l++) {
    const next = b.acquire(L);
    b.release(cur);
    cur = next;
  }
  const head = b.acquire(2); // small: a buffer of its own
  b.release(cur);
  const emb = b.acquire(E); // the whole first buffer, merged back
  expect([emb.buf, emb.off]).toEqual([0, 0]);
  b.release(emb);
  // backward: params, grad, prefetch and a grad in flight: 3 fit in the freed embedding buffer
  const rs = [b.acquire(L), b.acquire(L), b.acquire(L)];
  expect(rs.map((r) => [r.buf, r.off])).toEqual([[0, 0], [0, 30], [0, 60]]);
  const fourth = b.acquire(L); // 10 left: a new buffer of exactly 30
  expect(fourth.buf).not.toBe(0);
  for (const r of [...rs, fourth]) b.release(r);
  b.release(head);
  expect(b.acquire(E)).toEqual({ buf: 0, off: 0, len: E }); // merged into one range again
  expect(b.numel).toBe(E + 2 + L);
});

test("ranges are disjoint views of shared memory; merge with both neighbours", () => {
  const b = new FsdpBuffers(k, 64);
  const [x, y, z] = [b.acquire(20), b.acquire(20), b.acquire(20)];
  b.host(x).fill(1);
  b.host(y).fill(2);
  b.host(z).fill(3);
  expect([...b.host(y)]).toEqual(Array(20).fill(2));
  expect(b.host(x).buffer).toBeInstanceOf(SharedArrayBuffer); // the transport moves them
  expect(b.tensor(y, 5, 1)).toBe(b.tensor(y, 5, 1)); // cached for the model's view cache
  b.release(x);
  b.release(z);
  b.release(y); // joins x's and z's ranges: 64 free again
  expect(b.acquire(64)).toEqual({ buf: 0, off: 0, len: 64 });
});

test("lends a free range to kernel scratch (never allocating), never an acquired one; giveBack frees it", () => {
  const b = new FsdpBuffers(k, 100);
  const p = b.acquire(60); // buffer 0: [0, 60) in use, [60, 100) free
  const before = b.numel;
  expect(b.borrow(50)).toBeNull(); // no free range that long: no new buffer for scratch
  const lent = b.borrow(30)!;
  expect(lent.length).toBe(30);
  expect(lent.buffer).toBe(b.host(p).buffer); // the gather buffer's own memory
  expect(lent.byteOffset).toBe(60 * 4); // after the acquired range, not over it
  expect(b.numel).toBe(before);
  expect(b.acquire(20).buf).not.toBe(0); // a lent range is not free: only 10 left in buffer 0
  b.giveBack(lent);
  b.release(p);
  expect(b.acquire(100)).toEqual({ buf: 0, off: 0, len: 100 }); // merged into one range again
  expect(() => b.giveBack(new Float32Array(3))).toThrow(/not lent/);
});
