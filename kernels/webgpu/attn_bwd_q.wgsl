// Varlen attention backward (causal or full within each sample) for dq (T,NH,HS): a BxB workgroup owns B query tokens of head
// h (grid: x = query block, y = h), walks the key tiles they can see as the forward does, and
// recomputes P and dS = P (dout v^T - dd):  dq_t += scale * sum_j dS_tj k_j.
// Thread (x, y): scores query y against key x, then accumulates dims x, x+B, ... of query y.
override B: u32 = 16u;
override HSP: u32 = 112u; // shared row stride >= HS

struct P { dq_o: u32, q_o: u32, k_o: u32, v_o: u32, dout_o: u32, lse_o: u32, dd_o: u32, cu_o: u32,
  T: u32, NH: u32, NKV: u32, HS: u32, S: u32, scale: f32, causal: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dq: array<f32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read> lse: array<f32>;
@group(0) @binding(7) var<storage, read> dd: array<f32>;
@group(0) @binding(8) var<storage, read> cu: array<i32>;

var<workgroup> Qs: array<f32, B * HSP>;  // pre-scaled
var<workgroup> Os: array<f32, B * HSP>;
var<workgroup> Ks: array<f32, B * HSP>;
var<workgroup> Vs: array<f32, B * HSP>;
var<workgroup> Ds: array<f32, B * B>;

fn sampleIndex(t: u32) -> u32 {
  var lo = 0u;
  var hi = p.S;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (u32(cu[p.cu_o + mid]) <= t) { lo = mid; } else { hi = mid; }
  }
  return lo;
}

@compute @workgroup_size(B, B)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let x = lid.x;
  let y = lid.y;
  let h = wid.y;
  let kvh = h / (p.NH / p.NKV);
  let t0 = wid.x * B;
  let t = t0 + y;
  let ty = min(t, p.T - 1u);
  let si = sampleIndex(ty);
  let start = u32(cu[p.cu_o + si]);
  let end = u32(cu[p.cu_o + si + 1u]);
  let causal = p.causal != 0u;
  let jlo = u32(cu[p.cu_o + sampleIndex(t0)]);
  let tl = min(t0 + B, p.T) - 1u;
  var jhi = tl + 1u;
  if (!causal) { jhi = u32(cu[p.cu_o + sampleIndex(tl) + 1u]); }
  for (var d = x; d < p.HS; d += B) {
    Qs[y * HSP + d] = q[p.q_o + (ty * p.NH + h) * p.HS + d] * p.scale;
    Os[y * HSP + d] = dout[p.dout_o + (ty * p.NH + h) * p.HS + d];
  }
  let l = lse[p.lse_o + ty * p.NH + h];
  let dsum = dd[p.dd_o + ty * p.NH + h];
  var acc: array<f32, 16>;
  for (var j0 = jlo; j0 < jhi; j0 += B) {
    workgroupBarrier();
    let jy = min(j0 + y, p.T - 1u);
    for (var d = x; d < p.HS; d += B) {
      Ks[y * HSP + d] = k[p.k_o + (jy * p.NKV + kvh) * p.HS + d];
      Vs[y * HSP + d] = v[p.v_o + (jy * p.NKV + kvh) * p.HS + d];
    }
    workgroupBarrier();
    let j = j0 + x;
    var ds = 0.0;
    if (j >= start && select(j < end, j <= ty, causal)) {
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < p.HS; d++) {
        s += Qs[y * HSP + d] * Ks[x * HSP + d];
        dp += Os[y * HSP + d] * Vs[x * HSP + d];
      }
      ds = exp(s - l) * (dp - dsum);
    }
    Ds[y * B + x] = ds;
    workgroupBarrier();
    for (var i = 0u; i * B + x < p.HS; i++) {
      let d = i * B + x;
      var a = acc[i];
      for (var c = 0u; c < B; c++) { a += Ds[y * B + c] * Ks[c * HSP + d]; }
      acc[i] = a;
    }
  }
  if (t >= p.T) { return; }
  for (var i = 0u; i * B + x < p.HS; i++) {
    dq[p.dq_o + (t * p.NH + h) * p.HS + i * B + x] += acc[i] * p.scale;
  }
}
