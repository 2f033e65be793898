// GELU family forward, elementwise over N: y (N) <- act(x). kind 0 = exact "gelu":
// x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), erf from Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7;
// WGSL has no erf); kind 1 = "quick_gelu": x sigmoid(1.702 x). Backward: gelu_bwd.wgsl.
struct P { y_o: u32, x_o: u32, n: u32, kind: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

fn erf_as(v: f32) -> f32 {
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(v) * (1.0 - poly * exp(-a * a));
}

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let v = x[p.x_o + i];
  if (p.kind == 1u) {
    y[p.y_o + i] = v / (1.0 + exp(-1.702 * v));
  } else {
    y[p.y_o + i] = 0.5 * v * (1.0 + erf_as(v * 0.70710678118654752));
  }
}
