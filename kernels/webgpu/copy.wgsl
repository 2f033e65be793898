// Two-tensor elementwise ops over n 32-bit elements.
// copy: d[i] <- s[i] (any dtype, as bits)      axpy: d[i] <- d[i] + alpha * s[i] (f32)
struct P { d_o: u32, s_o: u32, n: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> d: array<u32>;
@group(0) @binding(2) var<storage, read> s: array<u32>;

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < p.n) { d[p.d_o + i] = s[p.s_o + i]; }
}

@compute @workgroup_size(256)
fn axpy(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < p.n) {
    let y = bitcast<f32>(d[p.d_o + i]) + p.alpha * bitcast<f32>(s[p.s_o + i]);
    d[p.d_o + i] = bitcast<u32>(y);
  }
}
