// Bad peers against a real rank's listener: the test process speaks the wire protocol itself
// (mesh/wire.ts) as garbage sender, impostor (wrong secret), stale rank (old epoch), liar
// (oversized length), bit flipper (bad CRC) and sloth (slow handshake). Each is refused, and
// a real peer still connects and completes a collective.
import { afterAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { crc32c } from "../../mesh/crc32c.ts";
import { Comm } from "../../mesh/index.ts";
import { REFUSED, RefusalLog } from "../../mesh/endpoint.ts";
import {
  encodeFrame, encodeHs, FRAME_HEADER, handshakeMac, HS_HEADER, HsType, Op, readHsHeader, writeFrameHeader, type Hello,
} from "../../mesh/wire.ts";
import { gen, hash } from "./mesh_cases.ts";
import { BASE, killAll, spawnRanks, type RankProc } from "./mesh_procs.ts";

const live: RankProc[] = [];
afterAll(() => killAll(live));

/** A raw TCP client that collects what the rank sends back. */
class Raw {
  private buf = new Uint8Array(0);
  private wake: (() => void) | null = null;
  readonly closed: Promise<void>;
  private sock!: Socket<undefined>;
  private constructor(private onClose: () => void, closed: Promise<void>) {
    this.closed = closed;
  }

  static async connect(addr: string): Promise<Raw> {
    let done!: () => void;
    const raw = new Raw(() => done(), new Promise<void>((r) => (done = r)));
    const [host, port] = addr.split(":");
    raw.sock = await Bun.connect({
      hostname: host, port: Number(port),
      socket: {
        data: (_s, d) => {
          const b = new Uint8Array(raw.buf.length + d.length);
          b.set(raw.buf);
          b.set(d, raw.buf.length);
          raw.buf = b;
          raw.wake?.();
        },
        close: () => {
          raw.onClose();
          raw.wake?.();
        },
      },
    });
    return raw;
  }

  write(b: Uint8Array): void {
    expect(this.sock.write(b)).toBe(b.length); // small writes: never partial here
  }

  /** Resolves once `n` bytes arrived since the last handshake message (waits on data events). */
  async bytes(n: number): Promise<void> {
    while (this.buf.length < n) await new Promise<void>((r) => (this.wake = r));
  }

  /** Next handshake message from the rank (waits on data events). */
  async readHs(): Promise<{ type: HsType; body: Record<string, string> }> {
    let closed = false;
    void this.closed.then(() => (closed = true));
    for (;;) {
      if (this.buf.length >= HS_HEADER) {
        const { type, len } = readHsHeader(this.buf);
        if (this.buf.length >= HS_HEADER + len) {
          const body = JSON.parse(new TextDecoder().decode(this.buf.subarray(HS_HEADER, HS_HEADER + len)));
          this.buf = this.buf.slice(HS_HEADER + len);
          return { type, body };
        }
      }
      if (closed) throw new Error("closed before a handshake message");
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}

const hello = (o: Partial<Hello> = {}): Hello => ({
  job: BASE.jobId, epoch: BASE.epoch, group: "world", from: 0, to: 1, nonce: randomBytes(16).toString("hex"), ...o,
});

/** Complete the handshake as rank 0 with `secret`; returns the link (frames follow). */
async function handshake(addr: string, h: Hello, secret: string): Promise<Raw> {
  const raw = await Raw.connect(addr);
  raw.write(encodeHs(HsType.Hello, h));
  const ch = await raw.readHs();
  expect(ch.type).toBe(HsType.Challenge);
  raw.write(encodeHs(HsType.Auth, { mac: handshakeMac(secret, "dialer", h, ch.body.nonce) }));
  return raw;
}

describe("mesh bad peers", () => {
  test("garbage, wrong secret, stale epoch, wrong job, oversized length and a slow handshake are refused; the real peer connects", async () => {
    const handshakeMs = 2000; // every handshake here, the real peer's too, must finish within it on a loaded machine
    const { procs, table } = await spawnRanks(2, "pair", { handshakeMs }, live);
    procs[1].send({ table }); // rank 0 gets the table only after the attacks
    const addr = table[1];
    const logs = (re: RegExp) => procs[1].next((e) => e.ev === "log" && re.test(String(e.msg)));

    const garbage = async () => {
      const raw = await Raw.connect(addr);
      raw.write(new Uint8Array(64).fill(0xab));
      await raw.closed;
      await logs(/handshake dropped from 127\.0\.0\.1:\d+: .*bad handshake magic 0xabababab/);
    };
    const wrongSecret = async () => {
      const raw = await handshake(addr, hello(), "not-the-secret");
      const rej = await raw.readHs();
      expect(rej.type).toBe(HsType.Reject);
      expect(rej.body.reason).toBe(REFUSED); // the peer learns nothing; the listener logs why
      await raw.closed;
      await logs(/handshake refused from 127\.0\.0\.1:\d+: rank 0 failed the handshake MAC/);
    };
    const refused = async (h: Hello, re: RegExp) => {
      const raw = await Raw.connect(addr);
      raw.write(encodeHs(HsType.Hello, h));
      const rej = await raw.readHs();
      expect(rej.type).toBe(HsType.Reject);
      expect(rej.body.reason).toBe(REFUSED);
      expect(JSON.stringify(rej.body)).not.toContain(BASE.jobId);
      await raw.closed;
      await logs(re);
    };
    const oversized = async () => {
      const raw = await Raw.connect(addr);
      const hdr = encodeHs(HsType.Hello, {}).subarray(0, HS_HEADER);
      new DataView(hdr.buffer).setUint32(8, 1 << 30, true); // claims a 1 GiB body
      raw.write(hdr);
      await raw.closed;
      await logs(/handshake dropped from 127\.0\.0\.1:\d+: .*handshake body length 1073741824 B above the limit 1024 B/);
    };
    const slow = async () => {
      const t0 = performance.now(); // before the connect: the listener's clock starts later, so no load can make this early
      const raw = await Raw.connect(addr);
      raw.write(encodeHs(HsType.Hello, hello()).subarray(0, 5)); // then nothing
      const rej = await raw.readHs();
      expect(rej.body.reason).toBe(REFUSED);
      await logs(new RegExp(`handshake refused from 127\\.0\\.0\\.1:\\d+: handshake not completed within ${handshakeMs} ms`));
      expect(performance.now() - t0).toBeGreaterThanOrEqual(handshakeMs - 1);
      await raw.closed;
    };
    await Promise.all([
      garbage(), wrongSecret(), oversized(), slow(),
      refused(hello({ epoch: BASE.epoch - 1 }), /epoch 2, expected 3 \(stale or future rank\)/),
      refused(hello({ job: "other-job" }), /job "other-job", expected "job-test"/),
      refused(hello({ to: 0 }), /Hello addressed to rank 0, this is rank 1/),
    ]);

    procs[0].send({ table });
    const res = await Promise.all(procs.map((p) => p.on("result")));
    const a = gen(30, 0, 3000);
    const b = gen(30, 1, 3000);
    for (let i = 0; i < a.length; i++) a[i] = a[i] + b[i];
    expect(res.map((e) => (e.res as { pair: string }).pair)).toEqual([hash(a), hash(a)]);
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual([0, 0]);
  });

  test("after a valid handshake: a flipped payload bit, an oversized frame length and bad magic fail the op naming the peer", async () => {
    const groups = ["crc", "crc_posted", "len", "magic"];
    const { procs, table } = await spawnRanks(2, "victim", { groups }, live);
    procs[0].kill(); // the test process plays rank 0 itself
    procs[1].send({ table });
    const frame = (): Uint8Array => {
      const payload = new Uint8Array(gen(12, 0, 1024).buffer, 0, 4096);
      return encodeFrame({ op: Op.AllReduce, step: 0, seq: 0, chunk: 0, total: 20000 }, payload);
    };
    const attacks: Record<string, () => Uint8Array> = {
      crc: () => {
        // A reduce-scatter frame: pooled, its CRC checked in the same pass as the add.
        const f = frame();
        f[FRAME_HEADER + 100] ^= 0x10; // after the CRC was computed
        return f;
      },
      len: () => {
        const f = new Uint8Array(FRAME_HEADER);
        writeFrameHeader(f, { op: Op.AllReduce, step: 0, seq: 0, chunk: 0, total: 20000, len: 64 << 20, payloadCrc: crc32c(f) });
        return f;
      },
      magic: () => new Uint8Array(FRAME_HEADER).fill(7),
    };
    const want: Record<string, RegExp> = {
      crc: /rank 1 group crc: all_reduce seq 0: .*rank 0: payload CRC32C mismatch in all_reduce\(sum\) seq 0 chunk 0/,
      crc_posted: /rank 1 group crc_posted: all_reduce seq 0: .*rank 0: payload CRC32C mismatch in all_reduce\(sum\) seq 0 chunk 0/,
      len: /rank 1 group len: all_reduce seq 0: .*rank 0: frame length 67108864 B above the limit 4194304 B/,
      magic: /rank 1 group magic: all_reduce seq 0: .*rank 0: bad frame magic 0x7070707/,
    };
    for (const name of groups) {
      const raw = await handshake(table[1], hello({ group: name }), BASE.secret);
      const ok = await raw.readHs();
      expect(ok.type).toBe(HsType.Ok);
      if (name === "crc_posted") {
        // A valid reduce-scatter frame; once the rank sent its own all-gather frame, it has
        // posted its all-gather receive (payload straight into the caller's buffer): then an
        // all-gather frame with a bit flipped after its CRC.
        // 5000 floats / 2 ranks = 10000 B segments in BASE.chunkBytes (4096 B) chunks.
        const seg = new Uint8Array(gen(13, 0, 2500).buffer, 0, 10000);
        const chunks = (step: number): Uint8Array[] => [0, 1, 2].map((chunk) =>
          encodeFrame({ op: Op.AllReduce, step, seq: 0, chunk, total: 20000 }, seg.subarray(chunk * 4096, (chunk + 1) * 4096)));
        for (const f of chunks(0)) raw.write(f);
        await raw.bytes(2 * (3 * FRAME_HEADER + 10000)); // its reduce-scatter and all-gather frames
        const ag = chunks(1)[0];
        ag[FRAME_HEADER + 4000] ^= 0x01;
        raw.write(ag);
      } else {
        raw.write(attacks[name]());
      }
      const err = await procs[1].next((e) => e.ev === "group_error" && e.name === name);
      expect(String(err.message)).toMatch(want[name]);
      await raw.closed;
    }
    expect(await procs[1].exited).toBe(0);
  });
});

describe("mesh listener", () => {
  test("binds only the configured address, before any table, from a port range", async () => {
    const busy = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const lo = busy.port;
    const comm = await Comm.listen({ rank: 0, host: "127.0.0.1", portRange: [lo, lo + 20] });
    try {
      const port = Number(comm.address.split(":")[1]);
      expect(port).toBeGreaterThan(lo); // the first port of the range was taken
      expect(port).toBeLessThanOrEqual(lo + 20);
      // 127.0.0.2 is loopback too, but not the address we bound: refused.
      let refused = false;
      await Bun.connect({ hostname: "127.0.0.2", port, socket: { data() {} } }).then((s) => s.end(), () => (refused = true));
      expect(refused).toBe(true);
      const ok = await Raw.connect(comm.address); // the configured address accepts (no table yet)
      ok.write(new Uint8Array(16).fill(1));
      await ok.closed; // and drops garbage
    } finally {
      await comm.close();
      busy.stop(true);
    }
  });
});

describe("refusal log", () => {
  test("each kind of refusal from an address is logged once per window, repeats counted in the next line", () => {
    const lines: string[] = [];
    let t = 0;
    const r = new RefusalLog((_l, msg) => lines.push(msg), 10_000, () => t);
    for (let i = 0; i < 50; i++) r.refused(`10.0.0.9:${40000 + i}`, "handshake refused", `job "x${i}", expected "secret-job"`.replace(/x\d+/, "x"));
    r.refused("10.0.0.9:1", "handshake dropped", "bad handshake magic 0xabababab");
    r.refused("10.0.0.7:2", "handshake refused", 'job "x", expected "secret-job"');
    expect(lines).toEqual([
      'mesh: handshake refused from 10.0.0.9:40000: job "x", expected "secret-job"',
      "mesh: handshake dropped from 10.0.0.9:1: bad handshake magic 0xabababab",
      'mesh: handshake refused from 10.0.0.7:2: job "x", expected "secret-job"',
    ]);
    t = 12_000;
    r.refused("10.0.0.9:3", "handshake refused", 'job "x", expected "secret-job"');
    expect(lines.at(-1)).toBe('mesh: handshake refused from 10.0.0.9:3: job "x", expected "secret-job" (and 49 more like it from 10.0.0.9 in the last 12 s)');
  });
});
