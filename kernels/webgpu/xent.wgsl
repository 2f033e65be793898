// Cross-entropy on one chunk of R logits rows (R,V), a 256-thread workgroup per row, in place:
// the logits become dlogits = gradScale * (softmax - onehot(target)), rowloss[row0 + r] =
// logsumexp - logit[target]. Target -100 (ignored) gives 0 loss and 0 grad; a target outside
// [0,V) flags error code 2 (thrown at the next sync point) and is treated as ignored.
struct P { z_o: u32, loss_o: u32, tg_o: u32, err_o: u32, R: u32, row0: u32, V: u32, gradScale: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> rowloss: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<i32>;
@group(0) @binding(4) var<storage, read_write> err: array<atomic<i32>>;

var<workgroup> red: array<f32, 256>;

fn reduceMax(tid: u32, v: f32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] = max(red[tid], red[tid + k]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduceSum(tid: u32, v: f32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] += red[tid + k]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  let tid = lid.x;
  let inRange = r < p.R;
  let base = p.z_o + r * p.V;
  var mx = -3.0e38;
  if (inRange) { for (var i = tid; i < p.V; i += 256u) { mx = max(mx, z[base + i]); } }
  mx = reduceMax(tid, mx);
  var s = 0.0;
  if (inRange) { for (var i = tid; i < p.V; i += 256u) { s += exp(z[base + i] - mx); } }
  s = reduceSum(tid, s);
  if (!inRange) { return; }
  let lse = mx + log(s);
  let tg = targets[p.tg_o + p.row0 + r];
  let bad = tg != -100 && (tg < 0 || u32(tg) >= p.V);
  if (bad && tid == 0u) {
    atomicOr(&err[p.err_o], 2);
    atomicStore(&err[p.err_o + 1u], tg);
  }
  let valid = tg != -100 && !bad;
  if (tid == 0u) {
    var l = 0.0;
    if (valid) { l = lse - z[base + u32(tg)]; }
    rowloss[p.loss_o + p.row0 + r] = l;
  }
  workgroupBarrier(); // the loss read of z[target] happens before the overwrite below
  for (var i = tid; i < p.V; i += 256u) {
    var g = 0.0;
    if (valid) {
      g = exp(z[base + i] - lse);
      if (i == u32(tg)) { g -= 1.0; }
    }
    z[base + i] = g * p.gradScale;
  }
}
