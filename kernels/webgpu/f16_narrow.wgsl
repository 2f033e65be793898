// Mixed-precision operands through the shader-f16 feature, first pass (f16_amax.wgsl has the
// scheme): ha = f16(a * sa), hb = f16(b * sb), stored as f16. The store to 16-bit memory is the
// rounding (round to nearest even on lavapipe and NVIDIA; WGSL leaves ties to the device): a
// conversion kept in registers, f32(f16(x)), was folded away to x by lavapipe's compiler.
// f16_widen.wgsl reads them back as f32 and undoes the scales. inf / NaN: as f16_cast.wgsl.
enable f16;

struct P { ha_o: u32, hb_o: u32, s_o: u32, a_o: u32, b_o: u32, na: u32, nb: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> ha: array<f16>;
@group(0) @binding(2) var<storage, read_write> hb: array<f16>;
@group(0) @binding(3) var<storage, read> slots: array<u32>;
@group(0) @binding(4) var<storage, read> a: array<f32>;
@group(0) @binding(5) var<storage, read> b: array<f32>;

#include "f16_scale.wgsl"

fn narrow(x: f32, s: f32) -> f16 {
  let v = x * s;
  if (!(abs(v) < 65504.0)) { return f16(0.0); } // inf / NaN: f16_widen.wgsl takes x itself
  return f16(v);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) ng: vec3u) {
  let i = gid.x + gid.y * ng.x * 256u;
  if (i < p.na) { ha[i] = narrow(a[p.a_o + i], pow2(scale_exp(slots[p.s_o]))); }
  if (i < p.nb) { hb[i] = narrow(b[p.b_o + i], pow2(scale_exp(slots[p.s_o + 1u]))); }
}
