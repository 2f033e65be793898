// The checks of Kernels.groupedGemm's arguments on the host: the expert offsets and every group's
// operand extents. The CPU backend runs them on each call; the WebGPU backend, whose offsets live
// on the device, runs the static part (a read beyond a binding is clamped there, never out of
// bounds) and the MoE block checks its host copy of the offsets (grouped_gemm.ts).
import type { GroupedGemmSpec, GroupLayout } from "./ops.ts";

function dims(g: GroupedGemmSpec, n: number): [number, number, number] {
  return [g.M < 0 ? n : g.M, g.N < 0 ? n : g.N, g.K < 0 ? n : g.K];
}

/** The static shape contract: sizes, leading dimensions, layouts (no offsets needed). */
export function checkGroupSpec(g: GroupedGemmSpec, maxRows: number): void {
  const bad = (what: string) => { throw new Error(`groupedGemm: ${what}`); };
  if (!Number.isInteger(g.E) || g.E < 1) bad(`E must be an integer >= 1, got ${g.E}`);
  if (!Number.isInteger(maxRows) || maxRows < 0) bad(`maxRows must be an integer >= 0, got ${maxRows}`);
  for (const [k, v] of [["M", g.M], ["N", g.N], ["K", g.K]] as const) {
    if (!Number.isInteger(v) || v < -1) bad(`${k} must be an integer >= 0 or GROUP_ROWS (-1), got ${v}`);
  }
  for (const [name, l] of [["out", g.out], ["a", g.a], ["b", g.b]] as const) {
    if (![l.perExpert, l.perRow, l.ld].every((x) => Number.isInteger(x) && x >= 0)) bad(`${name} layout ${JSON.stringify(l)} must hold integers >= 0`);
  }
}

/** Largest element index + 1 of a (rows, cols) block at `start` with rows `ld` apart (0 if empty). */
function extent(l: GroupLayout, start: number, rows: number, cols: number, what: string): number {
  if (rows === 0 || cols === 0) return 0;
  if (cols > l.ld) throw new Error(`groupedGemm: ${what} has ${cols} columns but ld ${l.ld}`);
  return start + (rows - 1) * l.ld + cols;
}

/** Offsets (E+1) from 0, non-decreasing, each group at most maxRows; every group inside its tensors. */
export function checkGroups(off: Int32Array, maxRows: number, g: GroupedGemmSpec, numel: { out: number; a: number; b: number }): void {
  checkGroupSpec(g, maxRows);
  if (off[0] !== 0) throw new Error(`groupedGemm: off[0] must be 0, got ${off[0]}`);
  for (let e = 0; e < g.E; e++) {
    const n = off[e + 1] - off[e];
    if (n < 0) throw new Error(`groupedGemm: offsets decrease at group ${e} (off[${e}] = ${off[e]}, off[${e + 1}] = ${off[e + 1]})`);
    if (n > maxRows) throw new Error(`groupedGemm: group ${e} has ${n} rows, more than maxRows ${maxRows}`);
    const [M, N, K] = dims(g, n);
    const at = (l: GroupLayout) => l.perExpert * e + l.perRow * off[e];
    const ends: [string, number, number][] = [
      ["out", M * N === 0 ? 0 : extent(g.out, at(g.out), M, N, `group ${e} out (${M},${N})`), numel.out],
      ["a", M * N * K === 0 ? 0 : extent(g.a, at(g.a), g.transA ? K : M, g.transA ? M : K, `group ${e} a`), numel.a],
      ["b", M * N * K === 0 ? 0 : extent(g.b, at(g.b), g.transB ? N : K, g.transB ? K : N, `group ${e} b`), numel.b],
    ];
    for (const [name, end, have] of ends) {
      if (end > have) throw new Error(`groupedGemm: group ${e} (${n} rows) reaches element ${end - 1} of ${name}, which has ${have}`);
    }
  }
}
