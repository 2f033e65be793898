// Varlen attention (GQA/MQA; causal, or full within each sample) over packed samples, flash style: forward keeps only lse
// (T,NH); backward recomputes probabilities tile by tile (attn_bwd_{d,kv,q}.wgsl), no atomics.
import { expectTensor } from "../tensor.ts";
import type { GpuTensor, Runtime } from "./runtime.ts";
import { grid } from "./runtime.ts";

const MAX_HS = 128; // the kernels hold a head's row in 16- or 8-wide register slices

function checks(op: string, q: GpuTensor, k: GpuTensor, v: GpuTensor, cu: GpuTensor,
  T: number, NH: number, NKV: number, HS: number): void {
  if (NKV < 1 || NH % NKV !== 0) throw new Error(`webgpu ${op}: NH=${NH} must be a multiple of NKV=${NKV}`);
  if (HS < 1 || HS > MAX_HS) throw new Error(`webgpu ${op}: HS=${HS} outside [1, ${MAX_HS}]`);
  if (cu.dtype !== "i32" || cu.numel < 2) throw new Error(`webgpu ${op}: cuSeqlens must be i32 (S+1) with S >= 1, got ${cu.dtype}[${cu.numel}]`);
  expectTensor(q, `${op}.q (T,NH,HS)`, "f32", T * NH * HS);
  expectTensor(k, `${op}.k (T,NKV,HS)`, "f32", T * NKV * HS);
  expectTensor(v, `${op}.v (T,NKV,HS)`, "f32", T * NKV * HS);
}

/**
 * Tile width B and the shared-memory row stride HSP of the backward kernels (4 tiles of B x HSP
 * in 32 KiB). Fixed per B, not per HS, so all head sizes share one compile per kernel.
 */
function tiles(HS: number): { B: number; HSP: number } {
  return HS <= 112 ? { B: 16, HSP: 112 } : { B: 8, HSP: 128 };
}

// out (T,NH,HS), lse (T,NH) <- softmax(q k^T scale) v within each sample of cuSeqlens (causal or full)
export function attentionForward(rt: Runtime, out: GpuTensor, lse: GpuTensor, q: GpuTensor, k: GpuTensor, v: GpuTensor,
  cuSeqlens: GpuTensor, T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void {
  checks("attentionForward", q, k, v, cuSeqlens, T, NH, NKV, HS);
  expectTensor(out, "attentionForward.out (T,NH,HS)", "f32", T * NH * HS);
  expectTensor(lse, "attentionForward.lse (T,NH)", "f32", T * NH);
  if (T === 0) return;
  const S = cuSeqlens.numel - 1;
  rt.dispatch({ file: "attn_fwd.wgsl", entry: "main" }, [out, lse, q, k, v, cuSeqlens], "uuuuufu",
    [T, NH, NKV, HS, S, scale, causal ? 1 : 0], [Math.ceil(T / 16), NH, 1]);
}

// dq (T,NH,HS), dk/dv (T,NKV,HS) += gradients from dout and the forward's q, k, v, out, lse
export function attentionBackward(rt: Runtime, dq: GpuTensor, dk: GpuTensor, dv: GpuTensor, dout: GpuTensor,
  q: GpuTensor, k: GpuTensor, v: GpuTensor, out: GpuTensor, lse: GpuTensor, cuSeqlens: GpuTensor,
  T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void {
  checks("attentionBackward", q, k, v, cuSeqlens, T, NH, NKV, HS);
  expectTensor(dq, "attentionBackward.dq (T,NH,HS)", "f32", T * NH * HS);
  expectTensor(dk, "attentionBackward.dk (T,NKV,HS)", "f32", T * NKV * HS);
  expectTensor(dv, "attentionBackward.dv (T,NKV,HS)", "f32", T * NKV * HS);
  expectTensor(dout, "attentionBackward.dout (T,NH,HS)", "f32", T * NH * HS);
  expectTensor(out, "attentionBackward.out (T,NH,HS)", "f32", T * NH * HS);
  expectTensor(lse, "attentionBackward.lse (T,NH)", "f32", T * NH);
  if (T === 0) return;
  const S = cuSeqlens.numel - 1;
  const dd = rt.temp("attn_dd", T * NH); // rowsum(dout * out), reused across layers
  rt.dispatch({ file: "attn_bwd_d.wgsl", entry: "main" }, [dd, dout, out], "uu", [T * NH, HS], grid(T * NH, 256));
  const { B, HSP } = tiles(HS);
  rt.dispatch({ file: "attn_bwd_kv.wgsl", entry: "main", constants: { B, HSP } }, [dk, dv, q, k, v, dout, lse, dd, cuSeqlens],
    "uuuuufu", [T, NH, NKV, HS, S, scale, causal ? 1 : 0], [Math.ceil(T / B), NKV, 1]);
  rt.dispatch({ file: "attn_bwd_q.wgsl", entry: "main", constants: { B, HSP } }, [dq, q, k, v, dout, lse, dd, cuSeqlens],
    "uuuuufu", [T, NH, NKV, HS, S, scale, causal ? 1 : 0], [Math.ceil(T / B), NH, 1]);
}
