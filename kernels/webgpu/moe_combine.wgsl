// MoE combine: y (T,C) <- sum over k = 0..K-1, in that order, of w (T,K)[t,k] * rows (R,C)[idx[t,k]].
// One thread per output element.
struct P { y_o: u32, r_o: u32, i_o: u32, w_o: u32, T: u32, K: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.T * p.C) { return; }
  let t = i / p.C;
  let c = i % p.C;
  var s = 0.0;
  for (var k = 0u; k < p.K; k++) {
    let r = u32(idx[p.i_o + t * p.K + k]);
    s += w[p.w_o + t * p.K + k] * rows[p.r_o + r * p.C + c];
  }
  y[p.y_o + i] = s;
}
