// Save on N ranks, load on M (FSDP even padded splits, DDP shares): every tensor byte-identical.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { loadExtra, loadShard, openCheckpoint } from "../../checkpoint/load.ts";
import { coverageErrors } from "../../checkpoint/plan.ts";
import { assemble, ddpPieces, expectedShapes, fillModel, firstDiff, fsdpPieces, saveAll, smallModel } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const units = smallModel();
const full = fillModel(units, 7);
const tmp = tempDir("reshard");

function expectSame(got: Map<string, Float32Array>) {
  expect([...got.keys()].sort()).toEqual([...full.keys()].sort());
  for (const [name, a] of full) expect({ name, diff: firstDiff(got.get(name)!, a) }).toEqual({ name, diff: -1 });
}

describe("reshard", () => {
  for (const [n, m] of [[4, 2], [2, 4], [4, 3], [3, 1]]) {
    test(`FSDP ${n} -> ${m} ranks`, async () => {
      const dir = join(tmp, `fsdp_${n}_${m}`, "global_step_5");
      await saveAll(dir, 5, [...Array(n).keys()].map((r) => fsdpPieces(units, n, r, full)));
      const meta = openCheckpoint(dir);
      expect(meta.world_size).toBe(n);
      const targets = [...Array(m).keys()].map((r) => fsdpPieces(units, m, r, null));
      // The target sharding itself tiles every tensor exactly once.
      const runs = targets.flatMap((ps, rank) => ps.map((p) => ({ name: p.name, start: p.start, length: p.data.length, rank })));
      expect(coverageErrors(expectedShapes(units), runs)).toEqual([]);
      for (const t of targets) loadShard(dir, { expected: expectedShapes(units), targets: t }, meta);
      expectSame(assemble(targets));
      expect(loadExtra(dir, meta, n - 1)).toEqual({ step: 5, rank: n - 1 });
    });
  }

  test("DDP 2 -> FSDP 3, and FSDP 4 -> one full replica", async () => {
    const dir = join(tmp, "ddp", "global_step_1");
    await saveAll(dir, 1, [0, 1].map((r) => ddpPieces(units, 2, r, full)));
    const targets = [0, 1, 2].map((r) => fsdpPieces(units, 3, r, null));
    for (const t of targets) loadShard(dir, { expected: expectedShapes(units), targets: t });
    expectSame(assemble(targets));

    const dir2 = join(tmp, "fsdp4", "global_step_2");
    await saveAll(dir2, 2, [0, 1, 2, 3].map((r) => fsdpPieces(units, 4, r, full)));
    const replica = [...full].map(([name, a]) => ({ name, group: name.startsWith("optim.") ? "optim" as const : "model" as const, shape: expectedShapes(units).get(name)!, start: 0, data: new Float32Array(a.length) }));
    loadShard(dir2, { expected: expectedShapes(units), targets: replica });
    expectSame(assemble([replica]));
  });

  test("coverage errors name gaps, overlaps and overruns", () => {
    const shapes = new Map([["w", [10]]]);
    expect(coverageErrors(shapes, [{ name: "w", start: 0, length: 4, rank: 0 }, { name: "w", start: 6, length: 4, rank: 1 }]))
      .toEqual(["w: elements [4, 6) are held by no rank"]);
    expect(coverageErrors(shapes, [{ name: "w", start: 0, length: 6, rank: 0 }, { name: "w", start: 4, length: 6, rank: 1 }]))
      .toEqual(["w: elements [4, 6) are held twice (rank 1 overlaps)"]);
    expect(coverageErrors(shapes, [{ name: "w", start: 0, length: 12, rank: 0 }, { name: "v", start: 0, length: 1, rank: 2 }]))
      .toEqual(["rank 2 holds a piece of unknown tensor v", "w: pieces reach element 12 but the tensor has 10 (shape [10])"]);
  });
});
