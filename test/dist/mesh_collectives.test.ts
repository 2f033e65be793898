// Every collective with 2, 3 and 4 real processes on loopback, uneven sizes, against the
// serial reference of test/dist/mesh_cases.ts: every rank's bytes must equal the reference
// (so all ranks agree bitwise where their outputs coincide).
import { afterAll, describe, expect, test } from "bun:test";
import { CASES, referenceCases } from "./mesh_cases.ts";
import { killAll, startRanks, type RankProc } from "./mesh_procs.ts";

const live: RankProc[] = [];
afterAll(() => killAll(live));

describe("mesh collectives vs serial reference", () => {
  for (const n of [2, 3, 4]) {
    test(`${n} processes`, async () => {
      const procs = await startRanks(n, "cases", {}, live);
      const results = await Promise.all(procs.map((p) => p.on("result")));
      for (let r = 0; r < n; r++) {
        const want = referenceCases(n, r);
        const got = results[r].res as Record<string, string>;
        for (const c of CASES) expect(`${c}@rank${r}: ${got[c]}`).toBe(`${c}@rank${r}: ${want[c]}`);
      }
      expect(await Promise.all(procs.map((p) => p.exited))).toEqual(Array(n).fill(0));
    });
  }
});
