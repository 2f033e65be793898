// Elementwise ops on any shape (same numel): zero, fill, copy, add, scale, axpy; and the strided
// column copy (copyCols).
// One thread per element, 256 per workgroup (grid() folds >65535 workgroups into y).
import type { GpuTensor, Runtime } from "./runtime.ts";
import { grid } from "./runtime.ts";

const bits = new Uint32Array(1);
const bitsF = new Float32Array(bits.buffer);

function f32Bits(v: number): number {
  bitsF[0] = v;
  return bits[0]!;
}

function expectSame(what: string, a: GpuTensor, b: GpuTensor): void {
  if (a.numel !== b.numel || a.dtype !== b.dtype) {
    throw new Error(`webgpu ${what}: expected equal dtype and numel, got ${a.dtype}[${a.numel}] and ${b.dtype}[${b.numel}]`);
  }
}

/** t <- value (f32 value, or an integer for i32 tensors) */
export function fill(rt: Runtime, t: GpuTensor, value: number): void {
  const v = t.dtype === "i32" ? value >>> 0 : f32Bits(value);
  rt.dispatch({ file: "fill.wgsl", entry: "fill" }, [t], "uu", [t.numel, v], grid(t.numel, 256));
}

/** t <- t * s */
export function scale(rt: Runtime, t: GpuTensor, s: number): void {
  rt.dispatch({ file: "fill.wgsl", entry: "scale" }, [t], "uu", [t.numel, f32Bits(s)], grid(t.numel, 256));
}

/** dst <- src */
export function copy(rt: Runtime, dst: GpuTensor, src: GpuTensor): void {
  expectSame("copy", dst, src);
  rt.dispatch({ file: "copy.wgsl", entry: "copy" }, [dst, src], "uf", [dst.numel, 0], grid(dst.numel, 256));
}

/** y <- y + alpha * x */
export function axpy(rt: Runtime, y: GpuTensor, alpha: number, x: GpuTensor): void {
  expectSame("axpy", y, x);
  rt.dispatch({ file: "copy.wgsl", entry: "axpy" }, [y, x], "uf", [y.numel, alpha], grid(y.numel, 256));
}

function sameView(a: GpuTensor, b: GpuTensor): boolean {
  return a.storage === b.storage && a.offset === b.offset && a.numel === b.numel;
}

/** out <- a + b; the in-place forms run as axpy (no aliasing copy). */
export function add(rt: Runtime, out: GpuTensor, a: GpuTensor, b: GpuTensor): void {
  expectSame("add a", out, a);
  expectSame("add b", out, b);
  if (sameView(out, a) && sameView(out, b)) return scale(rt, out, 2);
  if (sameView(out, a)) return axpy(rt, out, 1, b);
  if (sameView(out, b)) return axpy(rt, out, 1, a);
  rt.dispatch({ file: "add.wgsl", entry: "add" }, [out, a, b], "u", [out.numel], grid(out.numel, 256));
}

/** dst[n, dstOff + j*dstStride] (+)= src[n, srcOff + j*srcStride], n < N, j < width */
export function copyCols(rt: Runtime, dst: GpuTensor, src: GpuTensor, N: number, width: number, dstW: number, dstOff: number,
  dstStride: number, srcW: number, srcOff: number, srcStride: number, accumulate: boolean): void {
  for (const [t, w, off, st, what] of [[dst, dstW, dstOff, dstStride, "dst"], [src, srcW, srcOff, srcStride, "src"]] as const) {
    if (t.numel !== N * w) throw new Error(`webgpu copyCols.${what}: expected ${N * w} elements (N,${what}W), got ${t.numel}`);
    if (!(st >= 1) || off < 0 || (width > 0 && off + (width - 1) * st >= w)) {
      throw new Error(`webgpu copyCols.${what}: columns ${off} + (width ${width} - 1) * stride ${st} do not fit a row of ${w}`);
    }
  }
  rt.dispatch({ file: "copy_cols.wgsl", entry: "main" }, [dst, src], "uuuuuuuuu",
    [N, width, dstW, dstOff, dstStride, srcW, srcOff, srcStride, accumulate ? 1 : 0], grid(N * width, 256));
}
