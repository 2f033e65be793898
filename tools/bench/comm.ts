// Collective bandwidth on loopback, nccl-tests definitions (as /work/shared/bench/gloo_bench.py):
//   all_reduce: S = buffer bytes;  all_gather: S = total output;  reduce_scatter: S = total input;
//   all_to_all: S = per-rank buffer.  algbw = S / t;  busbw = algbw * 2(n-1)/n (all_reduce),
//   * (n-1)/n (others).  t = mean over `iters` back-to-back ops, max over ranks, median over reps.
// Usage: bun run bench comm --op all_reduce[,all_gather,...] --ranks N --bytes 16M[,64M]
//        [--reps 5 --iters 3 --chunk 512K --rounds 1 --no-ref]   |   --op crc --bytes 16M
//        | --op socket --bytes 256M   (Bun's own TCP sockets on loopback, no protocol: the floor of the
//          previous transport; mesh/ now makes the system calls itself, mesh/net.c)
// Beside ours, in the same run: iperf3 on loopback, single stream (the link limit) and one
// stream each way at once (--bidir, per direction: what each rank of a ring does), and PyTorch
// gloo (gloo_bench.py for its times, tools/bench/gloo_cpu.py for its CPU per op, user and kernel,
// beside ours); `--rounds N` alternates ours and the references N times and reports medians
// (ratios per round, then their median). Warm-up: 3 ops per case before timing (JIT tiers; a
// training job runs thousands). Human lines first; the LAST line is one JSON object.
import { readFileSync } from "node:fs";
import { Comm, crc32c, sharedF32 } from "../../mesh/index.ts";
import { balancedOffsets } from "../../mesh/collectives.ts";

type OpName = "all_reduce" | "all_gather" | "reduce_scatter" | "all_to_all";
const FACTOR: Record<OpName, (n: number) => number> = {
  all_reduce: (n) => (2 * (n - 1)) / n,
  all_gather: (n) => (n - 1) / n,
  reduce_scatter: (n) => (n - 1) / n,
  all_to_all: (n) => (n - 1) / n,
};
const GLOO_NAME: Record<OpName, string> = {
  all_reduce: "all_reduce",
  all_gather: "all_gather", // gloo lacks _all_gather_base; the list form gathers the same bytes
  reduce_scatter: "reduce_scatter_tensor(_reduce_scatter_base)",
  all_to_all: "all_to_all_single",
};

interface ChildCfg { rank: number; n: number; cases: { op: OpName; bytes: number }[]; reps: number; iters: number; chunk: number }

function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)i?B?$/i.exec(s.trim());
  if (!m) throw new Error(`bench comm: bad size ${s} (e.g. 16M, 4096)`);
  return Math.round(Number(m[1]) * { "": 1, K: 1024, M: 1 << 20, G: 1 << 30 }[m[2].toUpperCase() as "" | "K" | "M" | "G"]);
}

/** Busy CPU cores on the machine (all processes, ours included) between two calls. */
function cpuSampler(): () => number {
  const read = (): [number, number] => {
    const v = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    return [v[0] + v[1] + v[2] + v[5] + v[6], performance.now()];
  };
  const [b0, t0] = read();
  return () => {
    const [b1, t1] = read();
    return (b1 - b0) / 100 / ((t1 - t0) / 1000);
  };
}

// ---- one rank (child process) ----

async function child(cfg: ChildCfg): Promise<void> {
  const comm = await Comm.listen({ rank: cfg.rank, host: "127.0.0.1" });
  console.log(JSON.stringify({ ev: "listening", address: comm.address }));
  const first = await console[Symbol.asyncIterator]().next();
  const { table } = JSON.parse(String(first.value)) as { table: string[] };
  await comm.start({ worldSize: cfg.n, table, secret: "bench", jobId: "bench", epoch: 0, deadlineMs: 60000, chunkBytes: cfg.chunk });
  const g = await comm.world();
  const n = cfg.n;
  for (const { op, bytes } of cfg.cases) {
    const elems = bytes >> 2;
    let run: () => Promise<void>;
    if (op === "all_reduce") {
      const buf = sharedF32(elems).fill(1);
      run = () => g.allReduce(buf, "sum");
    } else if (op === "all_gather") {
      const off = balancedOffsets(elems, n);
      const out = sharedF32(elems).fill(1);
      const counts = off.slice(1).map((o, i) => o - off[i]);
      run = () => g.allGather(out, out.subarray(off[g.rank], off[g.rank + 1]), counts);
    } else if (op === "reduce_scatter") {
      const off = balancedOffsets(elems, n);
      const inp = sharedF32(elems).fill(1);
      const out = sharedF32(off[g.rank + 1] - off[g.rank]);
      const counts = off.slice(1).map((o, i) => o - off[i]);
      run = () => g.reduceScatter(out, inp, "sum", counts);
    } else {
      const off = balancedOffsets(elems, n);
      const counts = off.slice(1).map((o, i) => o - off[i]);
      const inp = sharedF32(elems).fill(1);
      const out = sharedF32(elems);
      run = () => g.allToAll(out, inp, counts, counts);
    }
    for (let i = 0; i < 3; i++) await run(); // warm-up: connections, JIT tiers, page faults
    const times: number[] = [];
    const cpu0 = process.cpuUsage();
    for (let r = 0; r < cfg.reps; r++) {
      await g.barrier();
      const t0 = performance.now();
      for (let i = 0; i < cfg.iters; i++) await run();
      times.push((performance.now() - t0) / cfg.iters / 1000);
    }
    const cpu = process.cpuUsage(cpu0);
    // CPU seconds this rank spent per op (all threads), in user space and in the kernel.
    const ops = cfg.reps * cfg.iters;
    console.log(JSON.stringify({ ev: "times", op, bytes, times, user: cpu.user / 1e6 / ops, sys: cpu.system / 1e6 / ops }));
  }
  await g.barrier();
  await comm.close();
  process.exit(0);
}

// ---- orchestration ----

/** CPU seconds per op of one rank: user space, kernel. */
interface Cpu { user: number; sys: number }

/** Median op time (s) per case; `cpu` gets the CPU per op of the busiest rank. */
async function runOurs(
  n: number, cases: ChildCfg["cases"], reps: number, iters: number, chunk: number, cpu: Map<string, Cpu>,
): Promise<Map<string, number>> {
  const procs = [...Array(n).keys()].map((rank) => {
    const cfg: ChildCfg = { rank, n, cases, reps, iters, chunk };
    return Bun.spawn([process.execPath, import.meta.path, "--child", JSON.stringify(cfg)], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  });
  const lines = procs.map((p) => {
    const out: object[] = [];
    const listening = new Promise<string>((resolve) => {
      void (async () => {
        let buf = "";
        for await (const c of p.stdout) {
          buf += new TextDecoder().decode(c);
          let i: number;
          while ((i = buf.indexOf("\n")) >= 0) {
            const e = JSON.parse(buf.slice(0, i));
            buf = buf.slice(i + 1);
            if (e.ev === "listening") resolve(e.address);
            else out.push(e);
          }
        }
      })();
    });
    return { listening, out };
  });
  try {
    const table = await Promise.all(lines.map((l) => l.listening));
    for (const p of procs) {
      p.stdin.write(JSON.stringify({ table }) + "\n");
      p.stdin.flush();
    }
    const codes = await Promise.all(procs.map((p) => p.exited));
    if (codes.some((c) => c !== 0)) throw new Error(`bench comm: rank exit codes ${codes.join(", ")}`);
  } finally {
    for (const p of procs) p.kill();
  }
  const t = new Map<string, number>();
  for (const { op, bytes } of cases) {
    const evs = lines.map((l) => (l.out as ({ op: string; bytes: number; times: number[] } & Cpu)[]).find((e) => e.op === op && e.bytes === bytes)!);
    const per = evs.map((e) => e.times);
    const busiest = evs.reduce((a, e) => (e.user + e.sys > a.user + a.sys ? e : a));
    cpu.set(`${op}/${bytes}`, { user: busiest.user, sys: busiest.sys });
    const maxOverRanks = per[0].map((_, r) => Math.max(...per.map((x) => x[r])));
    t.set(`${op}/${bytes}`, median(maxOverRanks));
  }
  return t;
}

function median(x: number[]): number {
  const s = [...x].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * iperf3 on loopback, GB/s, or null if it cannot run. Single stream: the link limit.
 * `bidir`: one stream each way at once (what every rank of a ring does), per direction.
 */
async function iperf3(bidir = false): Promise<number | null> {
  const port = 20000 + (process.pid % 20000);
  const srv = Bun.spawn(["iperf3", "-s", "-1", "-p", String(port)], { stdout: "ignore", stderr: "ignore" });
  try {
    // The server's "listening" line is block-buffered into a pipe: retry the client instead.
    for (let attempt = 0; attempt < 50; attempt++) {
      const cmd = ["iperf3", "-c", "127.0.0.1", "-p", String(port), "-t", "5", "-J", ...(bidir ? ["--bidir"] : [])];
      const cli = Bun.spawn(cmd, { stdout: "pipe", stderr: "ignore" });
      const j = JSON.parse(await new Response(cli.stdout).text());
      if (j.end?.sum_received) {
        const back = bidir ? j.end.sum_received_bidir_reverse?.bits_per_second : null;
        return (back ? (j.end.sum_received.bits_per_second + back) / 2 : j.end.sum_received.bits_per_second) / 8e9;
      }
      await Bun.sleep(100);
    }
    return null;
  } catch {
    return null;
  } finally {
    srv.kill();
  }
}

async function gloo(n: number, reps: number, iters: number): Promise<{ op: string; size_MiB: number; busbw_GBps?: number; algbw_GBps?: number; error?: string }[]> {
  const p = Bun.spawn(["/usr/bin/python3", "/work/shared/bench/gloo_bench.py", String(n), String(reps), String(iters)], {
    stdout: "pipe", stderr: "pipe", env: { ...process.env, GLOO_SOCKET_IFNAME: "lo", OMP_NUM_THREADS: "1" },
  });
  const text = await new Response(p.stdout).text();
  await p.exited;
  return text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** gloo's CPU per op (tools/bench/gloo_cpu.py), busiest rank, by "op/bytes"; ops gloo lacks are left out. */
async function glooCpu(n: number, iters: number, cases: ChildCfg["cases"]): Promise<Map<string, Cpu>> {
  const want = cases.filter((c) => c.op !== "reduce_scatter").map((c) => `${c.op}:${c.bytes}`);
  const got = new Map<string, Cpu>();
  if (want.length === 0) return got;
  const p = Bun.spawn(["/usr/bin/python3", new URL("./gloo_cpu.py", import.meta.url).pathname, String(n), String(Math.max(iters, 10)), ...want], {
    stdout: "pipe", stderr: "pipe", env: { ...process.env, GLOO_SOCKET_IFNAME: "lo", OMP_NUM_THREADS: "1" },
  });
  const text = await new Response(p.stdout).text();
  await p.exited;
  for (const l of text.split("\n").filter((x) => x.startsWith("{"))) {
    const r = JSON.parse(l) as { op: string; bytes: number; user_ms: number[]; sys_ms: number[] };
    const i = r.user_ms.reduce((b, _, k) => (r.user_ms[k] + r.sys_ms[k] > r.user_ms[b] + r.sys_ms[b] ? k : b), 0);
    got.set(`${r.op}/${r.bytes}`, { user: r.user_ms[i] / 1e3, sys: r.sys_ms[i] / 1e3 });
  }
  return got;
}

function crcBench(bytes: number): object {
  const b = new Uint8Array(bytes).map((_, i) => (i * 2654435761) >>> 24);
  crc32c(b);
  const times: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    crc32c(b);
    times.push((performance.now() - t0) / 1000);
  }
  return { bench: "comm", op: "crc32c", bytes, GBps: +(bytes / median(times) / 1e9).toFixed(3) };
}

/**
 * Raw Bun sockets on loopback, one process, no framing/CRC/copies: `bytes` in 512 KiB writes.
 * CPU per 64 MiB covers both ends (send + receive), what one ring rank pays per 64 MiB moved.
 */
async function socketBench(bytes: number): Promise<{ GBps: number; cpu_ms_per_64MiB: number }> {
  let got = 0;
  let done!: () => void;
  const fin = new Promise<void>((r) => (done = r));
  const srv = Bun.listen({
    hostname: "127.0.0.1", port: 0,
    socket: { binaryType: "uint8array", data(_s, d) { got += d.byteLength; if (got >= bytes) done(); } },
  });
  const payload = new Uint8Array(512 << 10).fill(1);
  let sent = 0;
  const pump = (s: { write(b: Uint8Array): number }): void => {
    while (sent < bytes) {
      const n = s.write(sent + payload.length <= bytes ? payload : payload.subarray(0, bytes - sent));
      if (n <= 0) return;
      sent += n;
    }
  };
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const cli = await Bun.connect({ hostname: "127.0.0.1", port: srv.port, socket: { open: pump, drain: pump, data() {} } });
  await fin;
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  cli.end();
  srv.stop(true);
  return { GBps: +(bytes / ms / 1e6).toFixed(3), cpu_ms_per_64MiB: +((((c.user + c.system) / 1000) * (64 << 20)) / bytes).toFixed(1) };
}

export async function main(args: string[]): Promise<void> {
  if (args[0] === "--child") return child(JSON.parse(args[1]) as ChildCfg);
  const opt = (k: string, d: string): string => {
    const i = args.indexOf(`--${k}`);
    return i >= 0 ? args[i + 1] : d;
  };
  const ops = opt("op", "all_reduce").split(",");
  const sizes = opt("bytes", "16M").split(",").map(parseBytes);
  if (ops[0] === "crc") {
    const r = crcBench(sizes[0]);
    console.log(`crc32c over ${sizes[0]} B: ${(r as { GBps: number }).GBps} GB/s`);
    console.log(JSON.stringify(r));
    return;
  }
  if (ops[0] === "socket") {
    const r = await socketBench(sizes[0]);
    console.log(`raw Bun socket, ${sizes[0]} B on loopback: ${r.GBps} GB/s, ${r.cpu_ms_per_64MiB} ms CPU per 64 MiB (both ends)`);
    console.log(JSON.stringify({ bench: "comm", op: "socket", bytes: sizes[0], ...r }));
    return;
  }
  for (const o of ops) if (!(o in FACTOR)) throw new Error(`bench comm: unknown --op ${o} (all_reduce|all_gather|reduce_scatter|all_to_all|crc|socket)`);
  const n = Number(opt("ranks", "2"));
  const reps = Number(opt("reps", "5"));
  const iters = Number(opt("iters", "3"));
  const chunk = parseBytes(opt("chunk", "512K"));
  const cases = ops.flatMap((op) => sizes.map((bytes) => ({ op: op as OpName, bytes })));

  const refs = !args.includes("--no-ref");
  const glooReps = Number(opt("gloo-reps", "3"));
  // The machine's speed drifts by tens of percent within minutes (a shared VM): alternate ours
  // and the references `rounds` times and quote the median of the per-round ratios.
  const rounds = Number(opt("rounds", "1"));
  type Round = { t: Map<string, number>; cpu: Map<string, Cpu>; glooCpu: Map<string, Cpu>; busy: number; gloo: Awaited<ReturnType<typeof gloo>>; link: number | null; duplex: number | null };
  const got: Round[] = [];
  for (let k = 0; k < rounds; k++) {
    const tag = rounds > 1 ? `round ${k + 1}/${rounds}: ` : "";
    const load = cpuSampler();
    const cpu = new Map<string, Cpu>();
    console.log(`${tag}ours: ${cases.length} cases on ${n} ranks (reps ${reps}, iters ${iters}, chunk ${chunk} B)...`);
    const t = await runOurs(n, cases, reps, iters, chunk, cpu);
    const busy = load();
    if (refs) console.log(`${tag}gloo_bench.py ${n} ${glooReps} ${iters} (all ops, 1/16/64 MiB)...`);
    const glooRows = refs ? await gloo(n, glooReps, iters) : [];
    if (refs) console.log(`${tag}tools/bench/gloo_cpu.py ${n}: gloo's CPU per op...`);
    const glooCpuPerOp = refs ? await glooCpu(n, iters, cases) : new Map<string, Cpu>();
    if (refs) console.log(`${tag}iperf3 -t 5 on loopback, single stream, then --bidir...`);
    const link = refs ? await iperf3() : null;
    const duplex = refs ? await iperf3(true) : null;
    got.push({ t, cpu, busy, gloo: glooRows, glooCpu: glooCpuPerOp, link, duplex });
  }
  const med = (xs: (number | null)[]): number | null => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length ? median(v) : null;
  };
  const span = (xs: (number | null)[]): string => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length > 1 ? ` [${Math.min(...v).toFixed(2)}-${Math.max(...v).toFixed(2)}]` : "";
  };
  const link = med(got.map((g) => g.link));
  const duplex = med(got.map((g) => g.duplex));
  const busyCores = median(got.map((g) => g.busy));

  const rows = cases.map(({ op, bytes }) => {
    const key = `${op}/${bytes}`;
    const per = got.map((g) => {
      const busbw = (bytes / g.t.get(key)! / 1e9) * FACTOR[op](n);
      const gr = g.gloo.find((x) => x.op === GLOO_NAME[op] && x.size_MiB * (1 << 20) === bytes);
      return {
        busbw, gloo: gr?.busbw_GBps ?? null, error: gr?.error,
        vsGloo: gr?.busbw_GBps ? busbw / gr.busbw_GBps : null,
        vsLink: g.link ? busbw / g.link : null, vsDuplex: g.duplex ? busbw / g.duplex : null,
      };
    });
    const sec = median(got.map((g) => g.t.get(key)!));
    const algbw = bytes / sec / 1e9;
    const busbw = algbw * FACTOR[op](n);
    const round2 = (x: number | null): number | null => (x === null ? null : +x.toFixed(2));
    const ms = (x: number | null): number | null => (x === null ? null : +(x * 1e3).toFixed(1));
    const row = {
      op, bytes, ranks: n, rounds, time_ms: +(sec * 1e3).toFixed(2),
      cpu_ms_per_rank: +(median(got.map((g) => g.cpu.get(key)!.user + g.cpu.get(key)!.sys)) * 1e3).toFixed(1),
      cpu_user_ms: +(median(got.map((g) => g.cpu.get(key)!.user)) * 1e3).toFixed(1),
      cpu_sys_ms: +(median(got.map((g) => g.cpu.get(key)!.sys)) * 1e3).toFixed(1),
      gloo_cpu_user_ms: ms(med(got.map((g) => g.glooCpu.get(key)?.user ?? null))),
      gloo_cpu_sys_ms: ms(med(got.map((g) => g.glooCpu.get(key)?.sys ?? null))),
      algbw_GBps: +algbw.toFixed(3), busbw_GBps: +busbw.toFixed(3),
      gloo_busbw_GBps: round2(med(per.map((p) => p.gloo))), vs_gloo: round2(med(per.map((p) => p.vsGloo))),
      gloo_error: per.find((p) => p.error)?.error,
      vs_iperf3: round2(med(per.map((p) => p.vsLink))), vs_iperf3_bidir: round2(med(per.map((p) => p.vsDuplex))),
      per_round: per.map((p) => ({ busbw_GBps: +p.busbw.toFixed(3), vs_gloo: round2(p.vsGloo) })),
    };
    console.log(`${op} ${bytes} B x${n}: ${row.time_ms} ms (cpu ${row.cpu_ms_per_rank} ms/rank: user ${row.cpu_user_ms}, sys ${row.cpu_sys_ms}), algbw ${row.algbw_GBps} GB/s, busbw ${row.busbw_GBps} GB/s` +
      (row.gloo_busbw_GBps !== null ? `, gloo busbw ${row.gloo_busbw_GBps} (x${row.vs_gloo}${span(per.map((p) => p.vsGloo))})` : row.gloo_error ? `, gloo: ${row.gloo_error}` : "") +
      (row.gloo_cpu_user_ms !== null ? ` (gloo cpu: user ${row.gloo_cpu_user_ms}, sys ${row.gloo_cpu_sys_ms})` : "") +
      (link ? `, iperf3 ${link.toFixed(2)} GB/s (x${row.vs_iperf3})` : "") +
      (duplex ? `, iperf3 --bidir ${duplex.toFixed(2)} GB/s per direction (x${row.vs_iperf3_bidir})` : ""));
    return row;
  });
  console.log(`machine busy cores during our runs: ${busyCores.toFixed(2)} of 2 (ours included)` +
    (rounds > 1 ? `; medians over ${rounds} rounds, ours/gloo per-round range in []` : ""));
  const last = rows[rows.length - 1];
  console.log(JSON.stringify({
    bench: "comm", ranks: n, algbw_GBps: last.algbw_GBps, busbw_GBps: last.busbw_GBps,
    iperf3_GBps: link !== null ? +link.toFixed(3) : null, iperf3_bidir_GBps: duplex !== null ? +duplex.toFixed(3) : null,
    busy_cores: +busyCores.toFixed(2), rows,
  }));
}

if (import.meta.main) await main(process.argv.slice(2));
