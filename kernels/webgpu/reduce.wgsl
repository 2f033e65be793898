// Deterministic reductions (fixed-shape trees, no atomics):
//   sumsq: y[w] <- sum of x[i]^2 over the w-th slice [w*per, (w+1)*per) of n   (a workgroup per slice)
//   sum:   y[0] <- (acc ? y[0] : 0) + sum of x[0..n)                           (one workgroup)
struct P { y_o: u32, x_o: u32, n: u32, per: u32, acc: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

var<workgroup> red: array<f32, 256>;

fn tree(tid: u32, v: f32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] += red[tid + k]; }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size(256)
fn sumsq(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let lo = wid.x * p.per;
  let hi = min(lo + p.per, p.n);
  var s = 0.0;
  for (var i = lo + lid.x; i < hi; i += 256u) { let v = x[p.x_o + i]; s += v * v; }
  let total = tree(lid.x, s);
  if (lid.x == 0u) { y[p.y_o + wid.x] = total; }
}

@compute @workgroup_size(256)
fn sum(@builtin(local_invocation_id) lid: vec3u) {
  var s = 0.0;
  for (var i = lid.x; i < p.n; i += 256u) { s += x[p.x_o + i]; }
  let total = tree(lid.x, s);
  if (lid.x == 0u) {
    var base = 0.0;
    if (p.acc != 0u) { base = y[p.y_o]; }
    y[p.y_o] = base + total;
  }
}
