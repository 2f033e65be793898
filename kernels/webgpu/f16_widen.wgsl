// Second pass of the shader-f16 operands (f16_narrow.wgsl): ya = f32(ha) / sa, yb = f32(hb) / sb;
// an element whose scaled value was inf / NaN (not below 65504) is taken from a, b unchanged.
enable f16;

struct P { ya_o: u32, yb_o: u32, s_o: u32, ha_o: u32, hb_o: u32, a_o: u32, b_o: u32, na: u32, nb: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> ya: array<f32>;
@group(0) @binding(2) var<storage, read_write> yb: array<f32>;
@group(0) @binding(3) var<storage, read> slots: array<u32>;
@group(0) @binding(4) var<storage, read> ha: array<f16>;
@group(0) @binding(5) var<storage, read> hb: array<f16>;
@group(0) @binding(6) var<storage, read> a: array<f32>;
@group(0) @binding(7) var<storage, read> b: array<f32>;

#include "f16_scale.wgsl"

fn widen(h: f16, x: f32, k: i32) -> f32 {
  if (!(abs(x * pow2(k)) < 65504.0)) { return x; }
  return f32(h) * pow2(-k);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) ng: vec3u) {
  let i = gid.x + gid.y * ng.x * 256u;
  if (i < p.na) { ya[p.ya_o + i] = widen(ha[i], a[p.a_o + i], scale_exp(slots[p.s_o])); }
  if (i < p.nb) { yb[p.yb_o + i] = widen(hb[i], b[p.b_o + i], scale_exp(slots[p.s_o + 1u])); }
}
