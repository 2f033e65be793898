// SwiGLU forward: y (N) <- silu(gate) * up, silu(g) = g * sigmoid(g).
struct P { y_o: u32, g_o: u32, u_o: u32, n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> u: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let x = g[p.g_o + i];
  y[p.y_o + i] = x / (1.0 + exp(-x)) * u[p.u_o + i];
}
