// Concurrent groups of a 2x2 mesh, and failures: kill -9 of a rank mid-collective, and
// misbehaving peers (wrong op, wrong size). Every surviving rank must fail with an error that
// names the peer and the op, and exit (a dead peer at once, a silent one at the receive deadline);
// nothing is left behind.
import { afterAll, describe, expect, test } from "bun:test";
import { gen, hash } from "./mesh_cases.ts";
import { killAll, startRanks, type RankProc } from "./mesh_procs.ts";

const live: RankProc[] = [];
afterAll(() => killAll(live));

/** Serial reference of repeated in-group all-reduces (n=2: order within a pair is a+b). */
function pairReduce(a: Float32Array, b: Float32Array, avg: boolean): void {
  for (let i = 0; i < a.length; i++) {
    const s = Math.fround(a[i] + b[i]);
    a[i] = b[i] = avg ? Math.fround(s / 2) : s;
  }
}

describe("mesh groups and failures", () => {
  test("tp and dp_shard groups of a 2x2 mesh run concurrently", async () => {
    const procs = await startRanks(4, "mesh2x2", {}, live);
    const res = (await Promise.all(procs.map((p) => p.on("result")))).map((e) => e.res as { tp: string; dp: string });
    // mesh [dp_shard=2, tp=2]: tp groups {0,1},{2,3}; dp_shard groups {0,2},{1,3}
    const a = [0, 1, 2, 3].map((r) => gen(20, r, 30001));
    const b = [0, 1, 2, 3].map((r) => gen(21, r, 20011));
    for (let i = 0; i < 3; i++) {
      pairReduce(a[0], a[1], false);
      pairReduce(a[2], a[3], false);
      pairReduce(b[0], b[2], true);
      pairReduce(b[1], b[3], true);
    }
    expect(res.map((x) => x.tp)).toEqual(a.map(hash));
    expect(res.map((x) => x.dp)).toEqual(b.map(hash));
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual([0, 0, 0, 0]);
  });

  test("kill -9 of one rank mid all-reduce: the others fail at once naming it, not at the receive deadline", async () => {
    // A deadline past this test's timeout: the others can only fail in time by seeing the closed socket.
    const procs = await startRanks(4, "loop", { deadlineMs: 600_000 }, live);
    await Promise.all(procs.map((p) => p.next((e) => e.ev === "iter" && (e.i as number) >= 2)));
    procs[2].kill("SIGKILL");
    const others = [0, 1, 3].map((r) => procs[r]);
    const errs = await Promise.all(others.map((p) => p.on("error")));
    const codes = await Promise.all(others.map((p) => p.exited));
    expect(codes).toEqual([1, 1, 1]);
    for (const e of errs) {
      expect(String(e.message)).toContain("rank 2");
      expect(String(e.message)).toContain("all_reduce");
      expect(String(e.message)).not.toMatch(/within \d+ ms/); // a closed connection, not a timer
    }
    expect(await procs[2].exited).not.toBe(0);
  });

  for (const mode of ["op", "size"] as const) {
    test(`a peer with the wrong ${mode} fails every rank, naming it`, async () => {
      const procs = await startRanks(3, "mismatch", { badRank: 1, mode, deadlineMs: 4000 }, live);
      const errs = await Promise.all(procs.map((p) => p.on("error")));
      expect(await Promise.all(procs.map((p) => p.exited))).toEqual([1, 1, 1]);
      // Whichever side detects it first names the other; the abort carries it to every rank.
      const want = mode === "op"
        ? /op mismatch: rank (1 sent broadcast seq 0, this rank is in all_reduce\(sum\)|[02] sent all_reduce\(sum\) seq 0, this rank is in broadcast) seq 0/
        : /size mismatch in all_reduce\(sum\) seq 0: rank (1 sends 20012 B, this rank expects 20000|[02] sends 20000 B, this rank expects 20012) B/;
      for (const e of errs) expect(String(e.message)).toMatch(want);
    });
  }

  test("a stalled peer (alive, silent) fails the others at the receive deadline", async () => {
    const deadlineMs = 1500;
    const procs = await startRanks(3, "stall", { badRank: 2, deadlineMs }, live);
    const errs = await Promise.all([procs[0].on("error"), procs[1].on("error")]);
    // rank 0 waits on rank 2 (its ring predecessor), rank 1 on rank 0: whichever timer fires first
    // (rank 0's, naming rank 2, or on a loaded machine rank 1's, naming rank 0) aborts the other.
    for (const e of errs) expect(String(e.message)).toMatch(/all_reduce seq 0: (rank [01] aborted: .*)?no frame from rank [02] within 1500 ms/);
    // not before the deadline, by the failing ranks' own clocks from entering the all-reduce (the
    // first to fail did on its own timer); no upper bound: a timer may fire late on a loaded machine
    const ms = await Promise.all([procs[0].on("stalled"), procs[1].on("stalled")]);
    expect(Math.max(...ms.map((e) => e.ms as number))).toBeGreaterThanOrEqual(deadlineMs - 1);
    expect(await Promise.all([procs[0].exited, procs[1].exited])).toEqual([1, 1]);
    expect(procs[2].proc.exitCode).toBeNull(); // the stalled rank was alive all along
    procs[2].kill();
  });
});
