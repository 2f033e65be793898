// LayerNorm forward (torch nn.LayerNorm in f32), one 256-thread workgroup per row of C:
// mean (N), rstd (N) = 1 / sqrt(mean((x - mean)^2) + eps);  y (N,C) <- (x - mean) * rstd * w + b.
// Both sums are fixed-shape trees in shared memory, so results do not depend on scheduling.
struct P { y_o: u32, mean_o: u32, rstd_o: u32, x_o: u32, w_o: u32, b_o: u32, N: u32, C: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<f32>;
@group(0) @binding(6) var<storage, read> b: array<f32>;

var<workgroup> red: array<f32, 256>;

fn rowSum(tid: u32, s: f32) -> f32 {
  workgroupBarrier();
  red[tid] = s;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] += red[tid + k]; }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  let tid = lid.x;
  let inRow = row < p.N;
  let base = row * p.C;
  var s = 0.0;
  if (inRow) {
    for (var c = tid; c < p.C; c += 256u) { s += x[p.x_o + base + c]; }
  }
  let mu = rowSum(tid, s) / f32(p.C);
  var v = 0.0;
  if (inRow) {
    for (var c = tid; c < p.C; c += 256u) { let d = x[p.x_o + base + c] - mu; v += d * d; }
  }
  let r = inverseSqrt(rowSum(tid, v) / f32(p.C) + p.eps);
  if (!inRow) { return; }
  for (var c = tid; c < p.C; c += 256u) {
    y[p.y_o + base + c] = (x[p.x_o + base + c] - mu) * r * w[p.w_o + c] + b[p.b_o + c];
  }
  if (tid == 0u) { mean[p.mean_o + row] = mu; rstd[p.rstd_o + row] = r; }
}
