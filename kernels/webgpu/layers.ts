// Embedding, RMSNorm, RoPE and SwiGLU: forward/backward pairs over the WGSL kernels beside this file.
// Edge checks (dtype, element counts) name the op and argument; shapes as in ../ops.ts.
import { expectTensor } from "../tensor.ts";
import type { GpuTensor, Runtime } from "./runtime.ts";
import { grid } from "./runtime.ts";

/** Rows as a 2D workgroup grid (one workgroup per row). */
function rows(n: number): [number, number, number] {
  return n <= 65535 ? [n, 1, 1] : [65535, Math.ceil(n / 65535), 1];
}

// out (T,C) <- table (V,C)[ids (T)]
export function embeddingForward(rt: Runtime, out: GpuTensor, ids: GpuTensor, table: GpuTensor, T: number, C: number, V: number): void {
  expectTensor(out, "embeddingForward.out (T,C)", "f32", T * C);
  expectTensor(ids, "embeddingForward.ids (T)", "i32", T);
  expectTensor(table, "embeddingForward.table (V,C)", "f32", V * C);
  rt.dispatch({ file: "embedding.wgsl", entry: "forward" }, [out, table, ids, rt.errors], "uuu", [T, C, V], grid(T * C, 256));
}

// dtable (V,C) [ids[t]] += dout (T,C) [t]
export function embeddingBackward(rt: Runtime, dtable: GpuTensor, dout: GpuTensor, ids: GpuTensor, T: number, C: number, V: number): void {
  expectTensor(dtable, "embeddingBackward.dtable (V,C)", "f32", V * C);
  expectTensor(dout, "embeddingBackward.dout (T,C)", "f32", T * C);
  expectTensor(ids, "embeddingBackward.ids (T)", "i32", T);
  rt.dispatch({ file: "embedding.wgsl", entry: "backward" }, [dtable, dout, ids, rt.errors], "uuu", [T, C, V], [Math.ceil(C / 64), 1, 1]);
}

// out (N,C), rstd (N) <- rmsnorm(inp (N,C)) * weight (C)
export function rmsnormForward(rt: Runtime, out: GpuTensor, rstd: GpuTensor, inp: GpuTensor, weight: GpuTensor,
  N: number, C: number, eps: number): void {
  expectTensor(out, "rmsnormForward.out (N,C)", "f32", N * C);
  expectTensor(rstd, "rmsnormForward.rstd (N)", "f32", N);
  expectTensor(inp, "rmsnormForward.inp (N,C)", "f32", N * C);
  expectTensor(weight, "rmsnormForward.weight (C)", "f32", C);
  rt.dispatch({ file: "rmsnorm.wgsl", entry: "forward" }, [out, rstd, inp, weight], "uuf", [N, C, eps], rows(N));
}

// dinp (N,C) +=, dweight (C) += ; from dout (N,C), inp (N,C), weight (C), rstd (N)
export function rmsnormBackward(rt: Runtime, dinp: GpuTensor, dweight: GpuTensor | null, dout: GpuTensor, inp: GpuTensor,
  weight: GpuTensor, rstd: GpuTensor, N: number, C: number): void {
  expectTensor(dinp, "rmsnormBackward.dinp (N,C)", "f32", N * C);
  expectTensor(dout, "rmsnormBackward.dout (N,C)", "f32", N * C);
  expectTensor(inp, "rmsnormBackward.inp (N,C)", "f32", N * C);
  expectTensor(weight, "rmsnormBackward.weight (C)", "f32", C);
  expectTensor(rstd, "rmsnormBackward.rstd (N)", "f32", N);
  if (dweight) {
    expectTensor(dweight, "rmsnormBackward.dweight (C)", "f32", C);
    // Column sums over N rows in CH chunks of R rows (CH x C threads instead of C), then in order.
    const CH = Math.max(1, Math.min(64, Math.ceil(N / 64)));
    const R = Math.ceil(N / CH);
    const part = rt.temp("rmsnorm_dw_part", CH * C);
    rt.dispatch({ file: "rmsnorm_bwd.wgsl", entry: "dw_part" }, [part, dout, inp, weight, rstd], "uuu", [N, C, R], [Math.ceil(C / 64), CH, 1]);
    rt.dispatch({ file: "bias.wgsl", entry: "colsum" }, [dweight, part], "uuu", [CH, C, 0], [Math.ceil(C / 256), 1, 1]);
  }
  rt.dispatch({ file: "rmsnorm_bwd.wgsl", entry: "dx" }, [dinp, dout, inp, weight, rstd], "uuu", [N, C, 0], rows(N));
}

function ropeChecks(op: string, y: GpuTensor, x: GpuTensor, cos: GpuTensor, sin: GpuTensor, positions: GpuTensor,
  T: number, NH: number, HS: number): void {
  if (HS % 2 !== 0) throw new Error(`webgpu ${op}: HS must be even, got ${HS}`);
  expectTensor(y, `${op}.out (T,NH,HS)`, "f32", T * NH * HS);
  expectTensor(x, `${op}.inp (T,NH,HS)`, "f32", T * NH * HS);
  expectTensor(positions, `${op}.positions (T)`, "i32", T);
  if (cos.numel !== sin.numel || cos.numel % (HS / 2) !== 0) {
    throw new Error(`webgpu ${op}: cos/sin must be (P, HS/2=${HS / 2}), got ${cos.numel} and ${sin.numel} elements`);
  }
}

// out (T,NH,HS) <- rope(inp) at positions (T)
export function ropeForward(rt: Runtime, out: GpuTensor, inp: GpuTensor, cos: GpuTensor, sin: GpuTensor,
  positions: GpuTensor, T: number, NH: number, HS: number): void {
  ropeChecks("ropeForward", out, inp, cos, sin, positions, T, NH, HS);
  if (out.storage === inp.storage && out.offset === inp.offset) {
    rt.dispatch({ file: "rope_inplace.wgsl", entry: "forward" }, [out, cos, sin, positions], "uuu", [T, NH, HS], grid((T * NH * HS) / 2, 256));
    return;
  }
  rt.dispatch({ file: "rope.wgsl", entry: "forward" }, [out, inp, cos, sin, positions], "uuu", [T, NH, HS], grid((T * NH * HS) / 2, 256));
}

// dinp (T,NH,HS) += rope^T(dout)
export function ropeBackward(rt: Runtime, dinp: GpuTensor, dout: GpuTensor, cos: GpuTensor, sin: GpuTensor,
  positions: GpuTensor, T: number, NH: number, HS: number): void {
  ropeChecks("ropeBackward", dinp, dout, cos, sin, positions, T, NH, HS);
  rt.dispatch({ file: "rope.wgsl", entry: "backward" }, [dinp, dout, cos, sin, positions], "uuu", [T, NH, HS], grid((T * NH * HS) / 2, 256));
}

// out (N) <- silu(gate) * up
export function swigluForward(rt: Runtime, out: GpuTensor, gate: GpuTensor, up: GpuTensor, N: number): void {
  expectTensor(out, "swigluForward.out (N)", "f32", N);
  expectTensor(gate, "swigluForward.gate (N)", "f32", N);
  expectTensor(up, "swigluForward.up (N)", "f32", N);
  rt.dispatch({ file: "swiglu.wgsl", entry: "forward" }, [out, gate, up], "u", [N], grid(N, 256));
}

// dgate (N) +=, dup (N) += ; from dout, gate, up (N)
export function swigluBackward(rt: Runtime, dgate: GpuTensor, dup: GpuTensor, dout: GpuTensor, gate: GpuTensor,
  up: GpuTensor, N: number): void {
  expectTensor(dgate, "swigluBackward.dgate (N)", "f32", N);
  expectTensor(dup, "swigluBackward.dup (N)", "f32", N);
  expectTensor(dout, "swigluBackward.dout (N)", "f32", N);
  expectTensor(gate, "swigluBackward.gate (N)", "f32", N);
  expectTensor(up, "swigluBackward.up (N)", "f32", N);
  rt.dispatch({ file: "swiglu_bwd.wgsl", entry: "backward" }, [dgate, dup, dout, gate, up], "u", [N], grid(N, 256));
}

// out (N,C), mean (N), rstd (N) <- layernorm(inp (N,C)) * weight (C) + bias (C)
export function layernormForward(rt: Runtime, out: GpuTensor, mean: GpuTensor, rstd: GpuTensor, inp: GpuTensor, weight: GpuTensor,
  bias: GpuTensor, N: number, C: number, eps: number): void {
  expectTensor(out, "layernormForward.out (N,C)", "f32", N * C);
  expectTensor(mean, "layernormForward.mean (N)", "f32", N);
  expectTensor(rstd, "layernormForward.rstd (N)", "f32", N);
  expectTensor(inp, "layernormForward.inp (N,C)", "f32", N * C);
  expectTensor(weight, "layernormForward.weight (C)", "f32", C);
  expectTensor(bias, "layernormForward.bias (C)", "f32", C);
  rt.dispatch({ file: "layernorm.wgsl", entry: "forward" }, [out, mean, rstd, inp, weight, bias], "uuf", [N, C, eps], rows(N));
}

// dinp (N,C) +=, dweight (C) +=, dbias (C) += ; from dout (N,C), inp (N,C), weight (C), mean (N), rstd (N)
export function layernormBackward(rt: Runtime, dinp: GpuTensor, dweight: GpuTensor | null, dbias: GpuTensor | null, dout: GpuTensor,
  inp: GpuTensor, weight: GpuTensor, mean: GpuTensor, rstd: GpuTensor, N: number, C: number): void {
  expectTensor(dinp, "layernormBackward.dinp (N,C)", "f32", N * C);
  expectTensor(dout, "layernormBackward.dout (N,C)", "f32", N * C);
  expectTensor(inp, "layernormBackward.inp (N,C)", "f32", N * C);
  expectTensor(weight, "layernormBackward.weight (C)", "f32", C);
  expectTensor(mean, "layernormBackward.mean (N)", "f32", N);
  expectTensor(rstd, "layernormBackward.rstd (N)", "f32", N);
  // Column sums over N rows in CH chunks of R rows, then the CH partials in order (as RMSNorm's dw).
  const CH = Math.max(1, Math.min(64, Math.ceil(N / 64)));
  const R = Math.ceil(N / CH);
  if (dweight) {
    expectTensor(dweight, "layernormBackward.dweight (C)", "f32", C);
    const part = rt.temp("layernorm_dw_part", CH * C);
    rt.dispatch({ file: "layernorm_bwd.wgsl", entry: "dw_part" }, [part, dout, inp, weight, mean, rstd], "uuu", [N, C, R], [Math.ceil(C / 64), CH, 1]);
    rt.dispatch({ file: "bias.wgsl", entry: "colsum" }, [dweight, part], "uuu", [CH, C, 0], [Math.ceil(C / 256), 1, 1]);
  }
  if (dbias) {
    expectTensor(dbias, "layernormBackward.dbias (C)", "f32", C);
    const part = rt.temp("layernorm_db_part", CH * C);
    rt.dispatch({ file: "bias.wgsl", entry: "colsum_part" }, [part, dout], "uuu", [N, C, R], [Math.ceil(C / 64), CH, 1]);
    rt.dispatch({ file: "bias.wgsl", entry: "colsum" }, [dbias, part], "uuu", [CH, C, 0], [Math.ceil(C / 256), 1, 1]);
  }
  rt.dispatch({ file: "layernorm_bwd.wgsl", entry: "dx" }, [dinp, dout, inp, weight, mean, rstd], "uuu", [N, C, 0], rows(N));
}

const GELU_KINDS = { gelu: 0, quick_gelu: 1 } as const;

function geluKind(op: string, kind: string): number {
  const v = (GELU_KINDS as Record<string, number>)[kind];
  if (v === undefined) throw new Error(`webgpu ${op}: kind must be "gelu" or "quick_gelu", got ${JSON.stringify(kind)}`);
  return v;
}

// out (N) <- gelu(inp) (exact or quick)
export function geluForward(rt: Runtime, out: GpuTensor, inp: GpuTensor, N: number, kind: string): void {
  const kv = geluKind("geluForward", kind);
  expectTensor(out, "geluForward.out (N)", "f32", N);
  expectTensor(inp, "geluForward.inp (N)", "f32", N);
  rt.dispatch({ file: "gelu.wgsl", entry: "forward" }, [out, inp], "uu", [N, kv], grid(N, 256));
}

// dinp (N) += dout * gelu'(inp)
export function geluBackward(rt: Runtime, dinp: GpuTensor, dout: GpuTensor, inp: GpuTensor, N: number, kind: string): void {
  const kv = geluKind("geluBackward", kind);
  expectTensor(dinp, "geluBackward.dinp (N)", "f32", N);
  expectTensor(dout, "geluBackward.dout (N)", "f32", N);
  expectTensor(inp, "geluBackward.inp (N)", "f32", N);
  rt.dispatch({ file: "gelu_bwd.wgsl", entry: "backward" }, [dinp, dout, inp], "uu", [N, kv], grid(N, 256));
}
