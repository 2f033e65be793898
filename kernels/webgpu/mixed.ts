// Mixed-precision GEMM operands on WebGPU (train.enable_mixed_precision). WGSL has no bf16, so the
// WebGPU path uses f16, whose 5-bit exponent covers only ~6e-8..65504: each operand is first
// scaled by a power of two from its own max |x| (max lands in [2^14, 2^15)), rounded to f16 and
// scaled back (f16_amax.wgsl, f16_cast.wgsl). Scaling by 2^k is exact, so the f32 GEMM that
// follows multiplies f16 values (products exact in f32: 11 + 11 significant bits) and accumulates
// them in f32, and nothing overflows or flushes to zero however large or small a tensor's values
// are (gradients scaled by 1 / tokens included). Where the adapter has shader-f16 the rounding is
// a store to an f16 buffer and a load back (f16_narrow / f16_widen: a conversion kept in registers
// was folded away by lavapipe's compiler), else the same rounding on f32 bits (f16_cast): a run
// means the same either way, bit for bit (test/kernels/webgpu_mixed.test.ts).
import { fill } from "./elementwise.ts";
import { grid, type GpuTensor, type Runtime } from "./runtime.ts";

/** How GEMM operands are taken: f32 as they are, or f16-rounded (native conversion or emulated). */
export type MatmulOperands = "f32" | "f16" | "f16-emulated";

/** The operand mode for a run: mixed precision off -> f32; on -> f16 through shader-f16 where the
 *  device has it (or `force` says so), else emulated. */
export function matmulOperands(mixed: boolean, hasF16: boolean, force: "auto" | "native" | "emulated"): MatmulOperands {
  if (!mixed) return "f32";
  if (force === "native" && !hasF16) throw new Error("webgpu: tuning.f16Cast native needs the shader-f16 feature, which this adapter lacks");
  return force === "emulated" || !hasF16 ? "f16-emulated" : "f16";
}

/** One line for the kernels description (the start-up log). */
export function operandsLine(m: MatmulOperands): string {
  switch (m) {
    case "f32": return "matmuls f32";
    case "f16": return "matmuls f16 operands (shader-f16: stored as f16; per-tensor power-of-two scaling), f32 accumulation";
    case "f16-emulated": return "matmuls f16 operands (rounded on f32 bits: no shader-f16; per-tensor power-of-two scaling), f32 accumulation";
  }
}

/** a' (na), b' (nb) <- a, b rounded to f16 under their own power-of-two scales, in f32 work buffers. */
export function f16Operands(rt: Runtime, a: GpuTensor, b: GpuTensor): [GpuTensor, GpuTensor] {
  const slots = rt.temp("f16_amax", 2); // two f32 maxima as u32 bits; 0 = +0.0
  fill(rt, slots, 0);
  const n = Math.max(a.numel, b.numel);
  rt.dispatch({ file: "f16_amax.wgsl", entry: "amax2" }, [slots, a, b], "uu", [a.numel, b.numel], [Math.min(256, Math.ceil(n / 256)), 1, 1]);
  const ya = rt.temp("f16_a", a.numel), yb = rt.temp("f16_b", b.numel);
  if (rt.operands === "f16") {
    // shader-f16: through f16 buffers (2 bytes per element; whole work buffers, offset 0)
    const ha = rt.temp("f16_ha", Math.ceil(a.numel / 2)), hb = rt.temp("f16_hb", Math.ceil(b.numel / 2));
    rt.dispatch({ file: "f16_narrow.wgsl", entry: "main" }, [ha, hb, slots, a, b], "uu", [a.numel, b.numel], grid(n, 256));
    rt.dispatch({ file: "f16_widen.wgsl", entry: "main" }, [ya, yb, slots, ha, hb, a, b], "uu", [a.numel, b.numel], grid(n, 256));
  } else {
    rt.dispatch({ file: "f16_cast.wgsl", entry: "main" }, [ya, yb, slots, a, b], "uu", [a.numel, b.numel], grid(n, 256));
  }
  return [rt.view(ya, 0, a.shape), rt.view(yb, 0, b.shape)];
}

/** Plain reference of one operand's cast (f16_amax.wgsl + f16_cast.wgsl): x' = f16(x * 2^k) / 2^k,
 *  2^k putting max |x| in [2^14, 2^15); an x whose scaled value is not below 65504 (inf, NaN, or
 *  any value of a tensor holding inf or NaN, whose scale is 1) passes through. */
export function f16CastReference(x: Float32Array): Float32Array {
  let amax = 0;
  for (const v of x) if (Number.isNaN(v) || !(Math.abs(v) <= amax)) amax = Number.isNaN(amax) ? amax : Math.abs(v); // NaN wins, as its bits do
  const bits = new Uint32Array(new Float32Array([amax]).buffer)[0]!;
  const e = bits >>> 23;
  const k = bits === 0 || e === 255 ? 0 : Math.min(126, Math.max(-113, 141 - e));
  const s = 2 ** k;
  return x.map((v) => (Math.abs(Math.fround(v * s)) < 65504 ? Math.fround(Math.f16round(Math.fround(v * s)) / s) : v));
}
