// Pure logic of mesh/: mesh factorisation and groups, CRC32C against known vectors and the
// bytewise reference, frame and handshake header checks, the native f32 reductions and
// socket layer (mesh/net.c) against their plain references.
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { balancedOffsets, Comm, crc32c, deviceMesh, expertMesh, sharedF32 } from "../../mesh/index.ts";
import { crc32cImpl, crc32cReference, crc32cTs } from "../../mesh/crc32c.ts";
import { addDivF32, addF32, errnoText, sockaddr, sockaddrText } from "../../mesh/net.ts";
import { Reactor, type NetSocket } from "../../mesh/reactor.ts";
import { encodeFrame, encodeHs, FRAME_HEADER, HsType, Op, readFrameHeader, readHsHeader } from "../../mesh/wire.ts";

describe("device mesh", () => {
  test("a bad factorisation names every factor", () => {
    expect(() => deviceMesh({ dp_shard: 2, ulysses: 2 }, 8)).toThrow(
      "mesh: pp(1) * dp_replicate(1) * dp_shard(2) * ulysses(2) * tp(1) != world_size(8)");
    expect(() => expertMesh(3, 8)).toThrow("mesh: ep_fsdp(2) * ep(3) != world_size(8)");
    expect(() => deviceMesh({ tp: 0 }, 1)).toThrow("axis tp has size 0");
  });

  test("rank <-> coordinates, row-major with tp innermost", () => {
    const m = deviceMesh({ pp: 2, dp_shard: 2, ulysses: 2, tp: 2 }, 16);
    for (let r = 0; r < 16; r++) expect(m.rankAt(m.coords(r))).toBe(r);
    expect(m.coordsOf(11)).toEqual({ pp: 1, dp_replicate: 0, dp_shard: 0, ulysses: 1, tp: 1 });
  });

  test("groups per axis and per flattened axis set", () => {
    const m = deviceMesh({ dp_shard: 2, ulysses: 2, tp: 2 }, 8);
    expect(m.groups(["tp"])).toEqual([[0, 1], [2, 3], [4, 5], [6, 7]]);
    expect(m.groups(["dp_shard"])).toEqual([[0, 4], [1, 5], [2, 6], [3, 7]]);
    // VeOmni's FSDP group: dp_shard x ulysses, whatever order the axes are named in
    expect(m.groupOf(5, ["ulysses", "dp_shard"])).toEqual([1, 3, 5, 7]);
    expect(m.groupName(5, ["ulysses", "dp_shard"])).toBe("dp_shard+ulysses@1.3.5.7");
    const e = expertMesh(2, 8);
    expect(e.groups(["ep"])).toEqual([[0, 1], [2, 3], [4, 5], [6, 7]]);
    expect(e.groupOf(2, ["ep_fsdp"])).toEqual([0, 2, 4, 6]);
  });

  test("balanced split of any size", () => {
    expect(balancedOffsets(10, 4)).toEqual([0, 3, 6, 8, 10]);
    expect(balancedOffsets(2, 4)).toEqual([0, 1, 2, 2, 2]);
  });
});

describe("crc32c and frames", () => {
  test("known vector and reference at every alignment", () => {
    expect(crc32c(new TextEncoder().encode("123456789"))).toBe(0xe3069283);
    const b = new Uint8Array(1000).map((_, i) => (i * 131 + 7) & 0xff);
    for (let off = 0; off < 9; off++) {
      for (const len of [0, 1, 15, 16, 17, 500, 991 - off]) {
        expect(crc32c(b, 0, off, len)).toBe(crc32cReference(b.subarray(off, off + len)));
      }
    }
    expect(crc32c(b.subarray(300), crc32c(b.subarray(0, 300)))).toBe(crc32c(b)); // incremental
  });

  test("native CRC32C (when loaded) equals the TS slice-by-16 and the bytewise reference", () => {
    // This machine has SSE4.2 (Zen 3): the hardware one must be the one in use here.
    expect(crc32cImpl).toBe("SSE4.2 crc32 via bun:ffi (mesh/crc32c_hw.c)");
    const b = new Uint8Array(new SharedArrayBuffer(3 << 20)).map((_, i) => (i * 2654435761) >>> 24);
    for (const [off, len] of [[0, b.length], [1, 255], [3, 256], [5, 4097], [7, (1 << 20) + 3], [b.length - 300, 300]]) {
      const want = crc32cReference(b.subarray(off, off + len));
      expect(crc32c(b, 0, off, len)).toBe(want);
      expect(crc32cTs(b, 0, off, len)).toBe(want);
    }
    const seed = crc32c(b.subarray(0, 1000));
    expect(crc32c(b, seed, 1000, 70000)).toBe(crc32cTs(b, seed, 1000, 70000)); // continued
    expect(crc32c(b, 0xf63af4ee, 9, 70000)).toBe(crc32cTs(b, 0xf63af4ee, 9, 70000)); // seed >= 2^31
  });

  test("frame headers are checked before allocation", () => {
    const f = encodeFrame({ op: Op.AllGather, step: 1, seq: 9, chunk: 2, total: 64 }, new Uint8Array(16).fill(3));
    const h = readFrameHeader(f.subarray(0, FRAME_HEADER), 1 << 20);
    expect(h).toMatchObject({ op: Op.AllGather, step: 1, seq: 9, chunk: 2, total: 64, len: 16 });
    expect(h.payloadCrc).toBe(crc32c(f.subarray(FRAME_HEADER)));
    expect(() => readFrameHeader(f.subarray(0, FRAME_HEADER), 8)).toThrow("frame length 16 B above the limit 8 B");
    const v = f.slice(0, FRAME_HEADER);
    v[4] = 2;
    expect(() => readFrameHeader(v, 1 << 20)).toThrow("frame version 2, expected 1");
    const c = f.slice(0, FRAME_HEADER);
    c[8] ^= 1; // seq bit flip
    expect(() => readFrameHeader(c, 1 << 20)).toThrow(/frame header CRC32C/);
    const hs = encodeHs(HsType.Hello, { a: 1 });
    expect(readHsHeader(hs)).toEqual({ type: HsType.Hello, len: 7 });
    hs[5] = 9;
    expect(() => readHsHeader(hs)).toThrow("unknown handshake message type 9");
  });
});

describe("native data plane (mesh/net.c)", () => {
  // Values that stress IEEE rounding: wide exponents, subnormals, signed zeros, inf, NaN.
  function values(n: number, seed: number): Float32Array {
    const out = new Float32Array(n);
    let x = seed;
    const special = [0, -0, 1e-45, -1e-45, 1.17549435e-38, 3.4e38, -3.4e38, Infinity, -Infinity, NaN];
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      out[i] = i % 37 === 0 ? special[x % special.length] : ((x / 2 ** 32) - 0.5) * 2 ** ((x % 60) - 30);
    }
    return out;
  }
  const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

  test("SSE add and add-then-divide give the bits of the JS f32 reference, any length, in place", () => {
    for (const n of [0, 1, 7, 8, 63, 64, 65, 1000, 4099]) {
      const a = values(n, 1 + n);
      const b = values(n, 77 + n);
      const sum = new Float32Array(n);
      const avg = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        sum[i] = a[i] + b[i];
        avg[i] = Math.fround(a[i] + b[i]) / 3;
      }
      const d = new Float32Array(n);
      addF32(d, a, b);
      expect(bits(d)).toEqual(bits(sum));
      addDivF32(d, a, b, 3);
      expect(bits(d)).toEqual(bits(avg));
      const inPlace = a.slice();
      addF32(inPlace, inPlace, b); // d aliases a (the ring's partial sum)
      expect(bits(inPlace)).toEqual(bits(sum));
      // unaligned views (a frame payload may start anywhere 4-aligned)
      const big = new Float32Array(n + 3);
      addF32(big.subarray(3), a, b);
      expect(bits(big.subarray(3))).toEqual(bits(sum));
    }
  });

  test("addresses round-trip; bad ones and refused connections are errors that say why", async () => {
    expect(sockaddrText(sockaddr("127.0.0.1", 29501).sa)).toBe("127.0.0.1:29501");
    expect(sockaddrText(sockaddr("::1", 80).sa)).toBe("[::1]:80");
    expect(() => sockaddr("10.0.0.300", 1)).toThrow('"10.0.0.300" is not a numeric IPv4/IPv6 address');
    expect(errnoText(-111)).toBe("Connection refused (errno 111)");
    const r = new Reactor();
    try {
      // A port that was just free and is not listened on: the kernel refuses at once.
      const port = await r.listen("127.0.0.1", [0], () => {});
      await expect(r.listen("127.0.0.1", [port], () => {})).rejects.toThrow(
        `mesh: cannot listen on 127.0.0.1 ports [${port}]: Address already in use (errno 98)`);
      r.unlisten();
      await expect(r.connect("127.0.0.1", port)).rejects.toThrow("Connection refused (errno 111)");
    } finally {
      await r.stop();
    }
  });

  test("bytes written on one socket arrive intact on the other, both ways at once", async () => {
    const r = new Reactor();
    try {
      const n = 3 << 20;
      const mk = (seed: number): Uint8Array<ArrayBuffer> => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9)) & 255);
      const out = [mk(7), mk(13)];
      const got = [new Uint8Array(n), new Uint8Array(n)];
      const fill = [0, 0];
      let done!: () => void;
      const both = new Promise<void>((res) => (done = res));
      // A minimal Link: read into `got[k]`, write `out[k]` whenever writable.
      const link = (k: number, s: import("../../mesh/reactor.ts").NetSocket) => {
        let sent = 0;
        const l = {
          target: () => got[k].subarray(fill[k]),
          received: (m: number) => {
            fill[k] += m;
            if (fill[0] === n && fill[1] === n) done();
            return false;
          },
          writable: () => {
            while (sent < n) {
              const w = s.writev([out[k]], sent);
              if (w <= 0) return;
              sent += w;
            }
          },
          wantsWrite: () => sent < n,
          wantsRead: () => true,
          closedByPeer: () => {},
          error: (e: Error) => { throw e; },
        };
        s.link = l;
        l.writable();
      };
      const port = await r.listen("127.0.0.1", [0], (s) => link(0, s));
      link(1, await r.connect("127.0.0.1", port));
      await both;
      expect(got[0]).toEqual(out[1]);
      expect(got[1]).toEqual(out[0]);
    } finally {
      await r.stop();
    }
  });

  test("a link that wants no reads is not read: TCP holds the sender back until it wants them again", async () => {
    const r = new Reactor();
    try {
      const n = 24 << 20; // far more than the kernel buffers of a loopback connection (a few MiB)
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = (i * 31 + (i >> 12)) & 255;
      const got = new Uint8Array(n);
      let fill = 0, sent = 0, paused = true;
      let stalled!: () => void, done!: () => void;
      const blocked = new Promise<void>((res) => (stalled = res));
      const all = new Promise<void>((res) => (done = res));
      const base = { closedByPeer: () => {}, error: (e: Error) => { throw e; } };
      const port = await r.listen("127.0.0.1", [0], (s: NetSocket) => {
        s.link = { ...base, target: () => got.subarray(fill), received: (m: number) => ((fill += m) === n && done(), false),
          writable: () => {}, wantsWrite: () => false, wantsRead: () => !paused };
      });
      const w = await r.connect("127.0.0.1", port);
      w.link = { ...base, target: () => new Uint8Array(64), received: () => false, wantsRead: () => true,
        wantsWrite: () => sent < n,
        writable: () => {
          for (;;) {
            const k = w.writev([out], sent);
            if (k <= 0) return stalled(); // the kernel takes no more: the reader holds nothing back
            if ((sent += k) === n) return;
          }
        } };
      w.link.writable();
      await blocked;
      expect(fill).toBe(0); // nothing was read while the link wanted no reads
      expect(sent).toBeLessThan(n);
      paused = false; // the next poll round reads again
      await all;
      expect(sent).toBe(n);
      expect(Buffer.from(got).equals(Buffer.from(out))).toBe(true);
    } finally {
      await r.stop();
    }
  }, 60_000);
});

describe("comm edges (one real rank)", () => {
  test("a group of one is the identity; bad buffers and layouts are refused by name", async () => {
    const comm = await Comm.listen({ rank: 0, host: "127.0.0.1" });
    try {
      await comm.start({ worldSize: 1, table: [comm.address], secret: "s", jobId: "j", epoch: 0 });
      const g = await comm.world();
      const a = sharedF32(5).fill(2.5);
      await g.allReduce(a, "avg");
      expect([...a]).toEqual([2.5, 2.5, 2.5, 2.5, 2.5]);
      expect(() => g.allReduce(new Float32Array(4))).toThrow(
        "mesh: all_reduce buffer must be backed by a SharedArrayBuffer (see sharedF32), got ArrayBuffer");
      expect(() => g.reduceScatter(sharedF32(2), sharedF32(5), "sum", [4])).toThrow(
        "mesh: reduce_scatter: counts sum to 4, buffer has 5 elements");
      expect(() => g.allGather(sharedF32(6), sharedF32(2), [6])).toThrow(
        "mesh: all_gather: shard has 2 elements, counts[0] = 6");
      expect(() => g.broadcast(a, 1)).toThrow("mesh: broadcast root 1 outside group of 1");
      const err = await comm.group([0, 3]).then(() => null, (e: Error) => e.message);
      expect(err).toBe("group g@0.3: rank 3 outside [0, 1)");
    } finally {
      await comm.close();
    }
  });

  test("the transport lets go of buffers the caller dropped (24 x 64 MiB through one comm)", async () => {
    // The worker keeps each SharedArrayBuffer it was given (protocol.ts, Ref) until the caller's
    // is garbage, then collects them (transport_worker.ts, COLLECT_AFTER). Kept for good, this
    // loop would hold 1.5 GiB; left to the worker's collector, about 1 GiB (measured).
    const comm = await Comm.listen({ rank: 0, host: "127.0.0.1" });
    try {
      await comm.start({ worldSize: 1, table: [comm.address], secret: "s", jobId: "j", epoch: 0 });
      const g = await comm.world();
      const MiB = 1 << 20;
      const rss = (): number => process.memoryUsage().rss;
      await g.allReduce(sharedF32(16).fill(1));
      const before = rss();
      let peak = before;
      for (let i = 0; i < 24; i++) {
        const a = sharedF32(16 * MiB).fill(i); // 64 MiB, every page touched
        await g.allReduce(a);
        expect(a[16 * MiB - 1]).toBe(i);
        Bun.gc(true);
        await new Promise((r) => setTimeout(r, 0)); // FinalizationRegistry callbacks run
        peak = Math.max(peak, rss());
      }
      expect((peak - before) / MiB).toBeLessThan(512);
    } finally {
      await comm.close();
    }
  }, 60_000); // 1.5 GiB filled and reduced: ~5 s on 2 quiet cores, past bun's 5 s default

  test("closing a comm gives back every descriptor: listener, links, eventfd", async () => {
    const fds = (): number => readdirSync("/proc/self/fd").length;
    // Two ranks in this process (two transport workers): a real link between them.
    const run = async (): Promise<void> => {
      const [a, b] = await Promise.all([0, 1].map((rank) => Comm.listen({ rank, host: "127.0.0.1" })));
      const table = [a.address, b.address];
      await Promise.all([a, b].map((c) => c.start({ worldSize: 2, table, secret: "s", jobId: "j", epoch: 0 })));
      const [ga, gb] = await Promise.all([a.world(), b.world()]);
      const x = sharedF32(1000).fill(1);
      const y = sharedF32(1000).fill(2);
      await Promise.all([ga.allReduce(x), gb.allReduce(y)]);
      expect(x[999]).toBe(3);
      await Promise.all([a.close(), b.close()]);
    };
    await run(); // first use loads and compiles the native code (TinyCC keeps no descriptors)
    const before = fds();
    for (let i = 0; i < 3; i++) await run();
    expect(fds()).toBe(before);
  });
});
