// GELU family backward, elementwise over N: dx (N) += dy * act'(x) (kinds as in gelu.wgsl):
// gelu' = Phi(x) + x phi(x);  quick_gelu' = s + 1.702 x s (1 - s), s = sigmoid(1.702 x).
struct P { dx_o: u32, dy_o: u32, x_o: u32, n: u32, kind: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;

fn erf_as(v: f32) -> f32 {
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(v) * (1.0 - poly * exp(-a * a));
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let v = x[p.x_o + i];
  var g = 0.0;
  if (p.kind == 1u) {
    let s = 1.0 / (1.0 + exp(-1.702 * v));
    g = s + 1.702 * v * s * (1.0 - s);
  } else {
    g = 0.5 * (1.0 + erf_as(v * 0.70710678118654752)) + v * exp(-0.5 * v * v) * 0.3989422804014327;
  }
  dx[p.dx_o + i] += dy[p.dy_o + i] * g;
}
