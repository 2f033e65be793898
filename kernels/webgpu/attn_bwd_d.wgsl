// Attention backward pre-pass: dd (T,NH) <- rowsum(dout * out) over HS, one thread per (t, h).
struct P { dd_o: u32, dout_o: u32, o_o: u32, TNH: u32, HS: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dd: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> o: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.TNH) { return; }
  var s = 0.0;
  for (var d = 0u; d < p.HS; d++) { s += dout[p.dout_o + i * p.HS + d] * o[p.o_o + i * p.HS + d]; }
  dd[p.dd_o + i] = s;
}
