// MoE combine backward, rows: drows (R,C)[idx[t,k]] += w[t,k] * dout (T,C)[t]. One thread per
// (t,k,c); route indices are distinct (checked by the caller's contract), so no two threads write
// the same element.
struct P { d_o: u32, g_o: u32, i_o: u32, w_o: u32, T: u32, K: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> drows: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.T * p.K * p.C) { return; }
  let tk = i / p.C;
  let c = i % p.C;
  let t = tk / p.K;
  let r = u32(idx[p.i_o + tk]);
  drows[p.d_o + r * p.C + c] += w[p.w_o + tk] * dout[p.g_o + t * p.C + c];
}
