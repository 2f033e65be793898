// Dropless grouped SwiGLU experts over the Kernels contract's GEMM: rows (tokens x routes) are
// sorted by expert, expert e owning rows [off[e], off[e+1]); each expert with rows runs the
// dense MLP's three GEMMs on its slice, gate and up fused in one (2I,C) GEMM, so the grouped
// GEMM gets whatever GEMM the backend has (OpenBLAS, oneDNN bf16, WGSL tiles). An expert with no
// rows costs nothing. Shapes (R rows, E experts, I expert width):
//   xs (R,C) sorted inputs; wgu (E,2I,C) = every expert's [gate_proj; up_proj]; wd (E,C,I) down_proj
//   gu (2I*R) saved: per expert the transposed block [gate^T; up^T] (2I,n_e) at offset 2I*off[e]
//   (the dense Mlp's transposed layout: gate^T and up^T are contiguous for the SwiGLU)
//   ys (R,C) expert outputs, still sorted by expert.
// Backward recomputes the activation h = silu(gate) * up from the saved gu instead of keeping it.
// `off` (E+1) lives on the host: the routing that produced it ran there (models/blocks/router.ts).
import type { Kernels } from "./ops.ts";
import type { Tensor } from "./tensor.ts";

type F32 = Tensor<"f32">;

export interface GroupedSwigluScratch {
  /** (I*R) recomputed activation h^T per expert block. */
  h: F32;
  /** (I*R) d(h^T). */
  dh: F32;
  /** (2I*R) d([gate^T; up^T]). */
  dgu: F32;
}

function checkOffsets(off: Int32Array, E: number, R: number): void {
  if (off.length !== E + 1 || off[0] !== 0 || off[E] !== R) {
    throw new Error(`groupedSwiglu: offsets must have E+1=${E + 1} entries from 0 to R=${R}, got [${Array.from(off).join(",")}]`);
  }
  for (let e = 0; e < E; e++) if (off[e + 1] < off[e]) throw new Error(`groupedSwiglu: offsets decrease at expert ${e}`);
}

/** ys (R,C) <- per expert e: down_e( silu(gate_e xs) * up_e xs ) over its rows; saves gu. */
export function groupedSwigluForward(k: Kernels, ys: F32, gu: F32, xs: F32, wgu: F32, wd: F32, off: Int32Array,
  E: number, C: number, I: number, hScratch: F32): void {
  const R = off[E];
  checkOffsets(off, E, R);
  for (let e = 0; e < E; e++) {
    const n = off[e + 1] - off[e];
    if (n === 0) continue;
    const r0 = off[e];
    const x = k.view(xs, r0 * C, [n * C]), g = k.view(gu, 2 * I * r0, [2 * I * n]), h = k.view(hScratch, I * r0, [I * n]);
    k.gemm(g, k.view(wgu, e * 2 * I * C, [2 * I * C]), x, 2 * I, n, C, false, true, 1, 0); // gu^T (2I,n) = Wgu_e (2I,C) x^T
    k.swigluForward(h, k.view(g, 0, [I * n]), k.view(g, I * n, [I * n]), I * n);
    k.gemm(k.view(ys, r0 * C, [n * C]), h, k.view(wd, e * C * I, [C * I]), n, C, I, true, true, 1, 0); // y (n,C) = h (n,I) Wd_e^T
  }
}

/** dxs (R,C) +=, dwgu (E,2I,C) +=, dwd (E,C,I) += from dys (R,C), recomputing h from the saved gu. */
export function groupedSwigluBackward(k: Kernels, dxs: F32, dwgu: F32, dwd: F32, dys: F32, xs: F32, gu: F32, wgu: F32, wd: F32,
  off: Int32Array, E: number, C: number, I: number, s: GroupedSwigluScratch): void {
  const R = off[E];
  checkOffsets(off, E, R);
  for (let e = 0; e < E; e++) {
    const n = off[e + 1] - off[e];
    if (n === 0) continue;
    const r0 = off[e];
    const x = k.view(xs, r0 * C, [n * C]), dy = k.view(dys, r0 * C, [n * C]);
    const g = k.view(gu, 2 * I * r0, [2 * I * n]), gate = k.view(g, 0, [I * n]), up = k.view(g, I * n, [I * n]);
    const h = k.view(s.h, I * r0, [I * n]), dh = k.view(s.dh, I * r0, [I * n]);
    const dg = k.view(s.dgu, 2 * I * r0, [2 * I * n]);
    const wguE = k.view(wgu, e * 2 * I * C, [2 * I * C]), wdE = k.view(wd, e * C * I, [C * I]);
    k.swigluForward(h, gate, up, I * n); // recompute the activation
    k.gemm(k.view(dwd, e * C * I, [C * I]), dy, h, C, I, n, true, true, 1, 1); // dWd_e (C,I) += dy^T (C,n) h^T^T (n,I)
    k.gemm(dh, wdE, dy, I, n, C, true, true, 1, 0); // dh^T (I,n) = Wd_e^T (I,C) dy^T (C,n)
    k.zero(dg);
    k.swigluBackward(k.view(dg, 0, [I * n]), k.view(dg, I * n, [I * n]), dh, gate, up, I * n);
    k.gemm(k.view(dwgu, e * 2 * I * C, [2 * I * C]), dg, x, 2 * I, C, n, false, false, 1, 1); // dWgu_e (2I,C) += dgu^T (2I,n) x (n,C)
    k.gemm(k.view(dxs, r0 * C, [n * C]), dg, wguE, n, C, 2 * I, true, false, 1, 1); // dx (n,C) += dgu (n,2I) Wgu_e (2I,C)
  }
}
