// LayerNorm backward, from dout (N,C), x (N,C), w (C), mean (N), rstd (N). With xhat = (x - mean) rstd
// and g = dout * w:
//   dx (N,C) += rstd * (g - mean(g) - xhat * mean(g * xhat))        (entry dx: a workgroup per row)
//   dw (C)   += sum_n dout * xhat, in two deterministic passes: entry dw_part writes d (CH,C) <- the
//              sums over CH chunks of R rows, then colsum (bias.wgsl) adds the CH partials in order.
//   (db (C) += sum_n dout is bias.wgsl's colsum_part + colsum.)
struct P { d_o: u32, dout_o: u32, x_o: u32, w_o: u32, mean_o: u32, rstd_o: u32, N: u32, C: u32, R: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> d: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(5) var<storage, read> mean: array<f32>;
@group(0) @binding(6) var<storage, read> rstd: array<f32>;

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
fn dx(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  let tid = lid.x;
  let inRow = row < p.N;
  let base = row * p.C;
  var mu = 0.0;
  var r = 0.0;
  if (inRow) { mu = mean[p.mean_o + row]; r = rstd[p.rstd_o + row]; }
  var sg = 0.0;
  var sgx = 0.0;
  if (inRow) {
    for (var c = tid; c < p.C; c += 256u) {
      let g = dout[p.dout_o + base + c] * w[p.w_o + c];
      sg += g;
      sgx += g * (x[p.x_o + base + c] - mu) * r;
    }
  }
  let mg = rowSum(tid, sg) / f32(p.C);
  let mgx = rowSum(tid, sgx) / f32(p.C);
  if (!inRow) { return; }
  for (var c = tid; c < p.C; c += 256u) {
    let xhat = (x[p.x_o + base + c] - mu) * r;
    d[p.d_o + base + c] += r * (dout[p.dout_o + base + c] * w[p.w_o + c] - mg - xhat * mgx);
  }
}

@compute @workgroup_size(64)
fn dw_part(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let c = gid.x;
  if (c >= p.C) { return; }
  let lo = wid.y * p.R;
  let hi = min(lo + p.R, p.N);
  var s = 0.0;
  for (var n = lo; n < hi; n++) {
    s += dout[p.dout_o + n * p.C + c] * (x[p.x_o + n * p.C + c] - mean[p.mean_o + n]) * rstd[p.rstd_o + n];
  }
  d[p.d_o + wid.y * p.C + c] = s;
}
