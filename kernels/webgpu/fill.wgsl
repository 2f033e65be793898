// In-place elementwise ops on one tensor of n 32-bit elements (f32 or i32, handled as bits).
// fill:  t[i] <- v (v is the value's bit pattern)      scale: t[i] <- t[i] * bitcast<f32>(v)
struct P { t_o: u32, n: u32, v: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> t: array<u32>;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < p.n) { t[p.t_o + i] = p.v; }
}

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < p.n) { t[p.t_o + i] = bitcast<u32>(bitcast<f32>(t[p.t_o + i]) * bitcast<f32>(p.v)); }
}
