// The per-tensor power-of-two scale of the mixed-precision operands (f16_amax.wgsl has the
// scheme), shared by f16_cast.wgsl, f16_narrow.wgsl and f16_widen.wgsl through `#include`
// (pipelines.ts inlines it; not a kernel of its own).

/** 2^k as f32 (k in [-126, 127]). */
fn pow2(k: i32) -> f32 { return bitcast<f32>(u32(k + 127) << 23u); }

/** Exponent k of the scale 2^k that puts max |x| (given as bits) in [2^14, 2^15); 0 for a zero,
 *  inf or NaN maximum; clamped so that 2^k and 2^-k are normal f32. */
fn scale_exp(bits: u32) -> i32 {
  let e = i32(bits >> 23u); // biased exponent of the max (bits of a non-negative float)
  if (bits == 0u || e == 255) { return 0; }
  return clamp(141 - e, -113, 126);
}
