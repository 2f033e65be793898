// RMSNorm backward, from dout (N,C), x (N,C), w (C), rstd (N). With g = dout * w:
//   dx (N,C) += rstd * g - x * rstd^3 * mean(g * x)              (entry dx: a workgroup per row)
//   dw (C)   += sum_n dout * x * rstd, in two deterministic passes: entry dw_part writes
//              d (CH,C) <- the sums over CH chunks of R rows (grid: x = column block, y = chunk),
//              then reduce_rows (colsum.wgsl) adds the CH partials in order into dw.
struct P { d_o: u32, dout_o: u32, x_o: u32, w_o: u32, rstd_o: u32, N: u32, C: u32, R: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> d: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn dx(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  let tid = lid.x;
  let inRow = row < p.N;
  let base = row * p.C;
  var s = 0.0;
  if (inRow) {
    for (var c = tid; c < p.C; c += 256u) { s += dout[p.dout_o + base + c] * w[p.w_o + c] * x[p.x_o + base + c]; }
  }
  red[tid] = s;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] += red[tid + k]; }
    workgroupBarrier();
  }
  if (!inRow) { return; }
  let r = rstd[p.rstd_o + row];
  let coef = r * r * r * red[0] / f32(p.C);
  for (var c = tid; c < p.C; c += 256u) {
    let g = dout[p.dout_o + base + c] * w[p.w_o + c];
    d[p.d_o + base + c] += r * g - x[p.x_o + base + c] * coef;
  }
}

@compute @workgroup_size(64)
fn dw_part(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let c = gid.x;
  if (c >= p.C) { return; }
  let lo = wid.y * p.R;
  let hi = min(lo + p.R, p.N);
  var s = 0.0;
  for (var n = lo; n < hi; n++) { s += dout[p.dout_o + n * p.C + c] * x[p.x_o + n * p.C + c] * rstd[p.rstd_o + n]; }
  d[p.d_o + wid.y * p.C + c] = s;
}
