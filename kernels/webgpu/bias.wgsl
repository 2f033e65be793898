// Column helpers, row-major (N,OC), one thread per column oc:
// add_rows: x (N,OC) += y (OC) broadcast over rows (linear bias).
// colsum:   x (OC) += sum_n y (N,OC), rows in order (bias gradients; and the second pass of the
//           chunked column sums, N = number of chunk partials).
// colsum_part: x (CH,OC) <- sums of y over CH chunks of R rows (grid: x = column block, y = chunk).
struct P { x_o: u32, y_o: u32, N: u32, OC: u32, R: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;

@compute @workgroup_size(256)
fn add_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < p.N * p.OC) { x[p.x_o + i] += y[p.y_o + i % p.OC]; }
}

@compute @workgroup_size(256)
fn colsum(@builtin(global_invocation_id) gid: vec3u) {
  let oc = gid.x;
  if (oc >= p.OC) { return; }
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) { s += y[p.y_o + n * p.OC + oc]; }
  x[p.x_o + oc] += s;
}

@compute @workgroup_size(64)
fn colsum_part(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let oc = gid.x;
  if (oc >= p.OC) { return; }
  let lo = wid.y * p.R;
  let hi = min(lo + p.R, p.N);
  var s = 0.0;
  for (var n = lo; n < hi; n++) { s += y[p.y_o + n * p.OC + oc]; }
  x[p.x_o + wid.y * p.OC + oc] = s;
}
