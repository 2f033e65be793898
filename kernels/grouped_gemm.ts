// Dropless grouped SwiGLU experts over the Kernels contract's grouped GEMM: rows (tokens x routes)
// are sorted by expert, expert e owning rows [off[e], off[e+1]); every GEMM below is ONE
// groupedGemm call for all experts (one GEMM per expert with rows on the CPU, through whatever GEMM
// the backend has: OpenBLAS, oneDNN, bf16 under mixed precision; one dispatch on WebGPU). Gate and
// up are fused in one (2I,C) GEMM per expert. An expert with no rows costs nothing.
// Shapes (R rows, E experts, I expert width):
//   xs (R,C) sorted inputs; wgu (E,2I,C) = every expert's [gate_proj; up_proj]; wd (E,C,I) down_proj
//   gu (2I,R) saved, transposed: gate^T (I,R) then up^T (I,R); expert e's block is columns
//     [off[e], off[e+1]) (leading dimension R), so the SwiGLU runs once over all I*R elements
//   h, dh (I,R) and dgu (2I,R): the same column-block layout
//   ys (R,C) expert outputs, still sorted by expert.
// Backward recomputes the activation h = silu(gate) * up from the saved gu instead of keeping it.
// `off` (E+1) comes from the host's routing (models/blocks/router.ts); it is checked here and
// uploaded to a small device buffer per call (an (E+1) i32 write; the GEMMs read it there).
import { GROUP_ROWS, type GroupedGemmSpec, type GroupLayout, type Kernels } from "./ops.ts";
import type { Tensor } from "./tensor.ts";

type F32 = Tensor<"f32">;

export interface GroupedSwigluScratch {
  /** (I*R) recomputed activation h^T, column blocks per expert. */
  h: F32;
  /** (I*R) d(h^T). */
  dh: F32;
  /** (2I*R) d([gate^T; up^T]). */
  dgu: F32;
}

function checkOffsets(off: Int32Array, E: number, R: number): number {
  if (off.length !== E + 1 || off[0] !== 0 || off[E] !== R) {
    throw new Error(`groupedSwiglu: offsets must have E+1=${E + 1} entries from 0 to R=${R}, got [${Array.from(off).join(",")}]`);
  }
  let most = 0;
  for (let e = 0; e < E; e++) {
    if (off[e + 1] < off[e]) throw new Error(`groupedSwiglu: offsets decrease at expert ${e}`);
    most = Math.max(most, off[e + 1] - off[e]);
  }
  return most;
}

/** The device copy of the offsets: one (E+1) i32 buffer per backend and E, rewritten per call
 *  (uploads are ordered after the work already queued, so a later layer's offsets never reach an
 *  earlier layer's GEMMs). */
const offBuffers = new WeakMap<Kernels, Map<number, Tensor<"i32">>>();
function deviceOffsets(k: Kernels, off: Int32Array, E: number): Tensor<"i32"> {
  let m = offBuffers.get(k);
  if (!m) offBuffers.set(k, (m = new Map()));
  let t = m.get(E);
  if (!t) m.set(E, (t = k.alloc([E + 1], "i32", { name: "moe.expert_offsets" })));
  k.upload(t, off);
  return t;
}

// operand layouts: row blocks of an (R, w) matrix, column blocks of a (rows, R) one, expert blocks of (E, r, c) weights
const rowBlock = (w: number): GroupLayout => ({ perExpert: 0, perRow: w, ld: w });
const colBlock = (R: number): GroupLayout => ({ perExpert: 0, perRow: 1, ld: R });
const weight = (r: number, c: number): GroupLayout => ({ perExpert: r * c, perRow: 0, ld: c });

function spec(E: number, M: number, N: number, K: number, transA: boolean, transB: boolean, beta: number,
  out: GroupLayout, a: GroupLayout, b: GroupLayout): GroupedGemmSpec {
  return { E, M, N, K, transA, transB, alpha: 1, beta, out, a, b };
}

/** ys (R,C) <- per expert e: down_e( silu(gate_e xs) * up_e xs ) over its rows; saves gu. */
export function groupedSwigluForward(k: Kernels, ys: F32, gu: F32, xs: F32, wgu: F32, wd: F32, off: Int32Array,
  E: number, C: number, I: number, hScratch: F32): void {
  const R = off[E];
  const most = checkOffsets(off, E, R);
  if (R === 0) return;
  const o = deviceOffsets(k, off, E), n = GROUP_ROWS;
  const g = k.view(gu, 0, [2 * I * R]), h = k.view(hScratch, 0, [I * R]);
  // gu^T_e (2I,n) = Wgu_e (2I,C) xs_e^T
  k.groupedGemm(g, wgu, xs, o, most, spec(E, 2 * I, n, C, false, true, 0, colBlock(R), weight(2 * I, C), rowBlock(C)));
  k.swigluForward(h, k.view(g, 0, [I * R]), k.view(g, I * R, [I * R]), I * R);
  // y_e (n,C) = h_e (n,I) Wd_e^T: h_e stored (I,n) and Wd_e (C,I), both transposed
  k.groupedGemm(k.view(ys, 0, [R * C]), h, wd, o, most, spec(E, n, C, I, true, true, 0, rowBlock(C), colBlock(R), weight(C, I)));
}

/** dxs (R,C) +=, dwgu (E,2I,C) +=, dwd (E,C,I) += from dys (R,C), recomputing h from the saved gu. */
export function groupedSwigluBackward(k: Kernels, dxs: F32, dwgu: F32, dwd: F32, dys: F32, xs: F32, gu: F32, wgu: F32, wd: F32,
  off: Int32Array, E: number, C: number, I: number, s: GroupedSwigluScratch): void {
  const R = off[E];
  const most = checkOffsets(off, E, R);
  if (R === 0) return;
  const o = deviceOffsets(k, off, E), n = GROUP_ROWS;
  const g = k.view(gu, 0, [2 * I * R]), gate = k.view(g, 0, [I * R]), up = k.view(g, I * R, [I * R]);
  const h = k.view(s.h, 0, [I * R]), dh = k.view(s.dh, 0, [I * R]), dg = k.view(s.dgu, 0, [2 * I * R]);
  const dy = k.view(dys, 0, [R * C]), x = k.view(xs, 0, [R * C]);
  k.swigluForward(h, gate, up, I * R); // recompute the activation
  // dWd_e (C,I) += dy_e^T (C,n) h_e^T (n,I)
  k.groupedGemm(dwd, dy, h, o, most, spec(E, C, I, n, true, true, 1, weight(C, I), rowBlock(C), colBlock(R)));
  // dh^T_e (I,n) = Wd_e^T (I,C) dy_e^T (C,n)
  k.groupedGemm(dh, wd, dy, o, most, spec(E, I, n, C, true, true, 0, colBlock(R), weight(C, I), rowBlock(C)));
  k.zero(dg);
  k.swigluBackward(k.view(dg, 0, [I * R]), k.view(dg, I * R, [I * R]), dh, gate, up, I * R);
  // dWgu_e (2I,C) += dgu^T_e (2I,n) xs_e (n,C)
  k.groupedGemm(dwgu, dg, x, o, most, spec(E, 2 * I, C, n, false, false, 1, weight(2 * I, C), colBlock(R), rowBlock(C)));
  // dxs_e (n,C) += dgu_e (n,2I) Wgu_e (2I,C): dgu_e stored (2I,n), transposed
  k.groupedGemm(k.view(dxs, 0, [R * C]), dg, wgu, o, most, spec(E, n, C, 2 * I, true, false, 1, rowBlock(C), colBlock(R), weight(2 * I, C)));
}
