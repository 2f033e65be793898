// RMSNorm forward (HF LlamaRMSNorm in f32), one 256-thread workgroup per row of C.
// y (N,C) <- x * rstd * w (C);  rstd (N) <- 1 / sqrt(mean(x^2) + eps). The sum of squares is a
// fixed-shape tree in shared memory, so results do not depend on scheduling.
struct P { y_o: u32, rstd_o: u32, x_o: u32, w_o: u32, N: u32, C: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  let tid = lid.x;
  let inRow = row < p.N;
  let base = row * p.C;
  var s = 0.0;
  if (inRow) {
    for (var c = tid; c < p.C; c += 256u) { let v = x[p.x_o + base + c]; s += v * v; }
  }
  red[tid] = s;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] += red[tid + k]; }
    workgroupBarrier();
  }
  if (!inRow) { return; }
  let r = inverseSqrt(red[0] / f32(p.C) + p.eps);
  for (var c = tid; c < p.C; c += 256u) { y[p.y_o + base + c] = x[p.x_o + base + c] * r * w[p.w_o + c]; }
  if (tid == 0u) { rstd[p.rstd_o + row] = r; }
}
