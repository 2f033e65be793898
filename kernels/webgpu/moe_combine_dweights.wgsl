// MoE combine backward, weights: dw (T,K)[t,k] += dot(dout (T,C)[t], rows (R,C)[idx[t,k]]).
// One thread per (t,k), the C products summed in order.
struct P { d_o: u32, g_o: u32, r_o: u32, i_o: u32, T: u32, K: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<f32>;
@group(0) @binding(4) var<storage, read> idx: array<i32>;

@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let tk = gid.x + gid.y * nwg.x * 64u;
  if (tk >= p.T * p.K) { return; }
  let t = tk / p.K;
  let r = u32(idx[p.i_o + tk]);
  var s = 0.0;
  for (var c = 0u; c < p.C; c++) { s += dout[p.g_o + t * p.C + c] * rows[p.r_o + r * p.C + c]; }
  dw[p.d_o + tk] += s;
}
