// Second pass of the mixed-precision GEMM operands (f16_amax.wgsl has the whole scheme):
//   ya = f16(a * sa) / sa, yb = f16(b * sb) / sb with sa, sb from the maxima in slots (f32 bits).
// For adapters without shader-f16 (with it: f16_narrow.wgsl + f16_widen.wgsl, the same values):
// round_f16 rounds on f32 bits to nearest, ties to even (WGSL's round()), keeps f16 subnormals,
// and passes inf and NaN through (a scaled finite value stays below 2^15: never an f16 overflow).

struct P { ya_o: u32, yb_o: u32, s_o: u32, a_o: u32, b_o: u32, na: u32, nb: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> ya: array<f32>;
@group(0) @binding(2) var<storage, read_write> yb: array<f32>;
@group(0) @binding(3) var<storage, read> slots: array<u32>;
@group(0) @binding(4) var<storage, read> a: array<f32>;
@group(0) @binding(5) var<storage, read> b: array<f32>;

#include "f16_scale.wgsl"

/** x rounded to the nearest f16 value (ties to even), held in f32. */
fn round_f16(x: f32) -> f32 {
  let ax = abs(x);
  if (!(ax < 65520.0)) { // inf, NaN, or past the midpoint between 65504 and 2^16
    if (ax != ax) { return x; }
    return bitcast<f32>((bitcast<u32>(x) & 0x80000000u) | 0x7f800000u); // +-inf, built at run time
  }
  let e = i32((bitcast<u32>(ax) >> 23u) & 0xffu) - 127;
  let q = pow2(max(e, -14) - 10); // f16 spacing: 2^(e-10) for normals, 2^-24 for subnormals
  return round(x / q) * q; // both products exact (powers of two); round() ties to even
}

fn to_f16(x: f32, s: f32, inv: f32) -> f32 {
  let v = x * s;
  if (!(abs(v) < 65504.0)) { return x; } // inf / NaN (finite scaled values are < 2^15)
  return round_f16(v) * inv;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) ng: vec3u) {
  let i = gid.x + gid.y * ng.x * 256u;
  let ka = scale_exp(slots[p.s_o]);
  let kb = scale_exp(slots[p.s_o + 1u]);
  if (i < p.na) { ya[p.ya_o + i] = to_f16(a[p.a_o + i], pow2(ka), pow2(-ka)); }
  if (i < p.nb) { yb[p.yb_o + i] = to_f16(b[p.b_o + i], pow2(kb), pow2(-kb)); }
}
