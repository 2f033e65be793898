// SwiGLU backward: dgate (N) += dout * up * silu'(gate), dup (N) += dout * silu(gate),
// silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g).
struct P { dg_o: u32, du_o: u32, dout_o: u32, g_o: u32, u_o: u32, n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dg: array<f32>;
@group(0) @binding(2) var<storage, read_write> du: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read> u: array<f32>;

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let x = g[p.g_o + i];
  let s = 1.0 / (1.0 + exp(-x));
  let d = dout[p.dout_o + i];
  dg[p.dg_o + i] += d * u[p.u_o + i] * s * (1.0 + x * (1.0 - s));
  du[p.du_o + i] += d * x * s;
}
