// Varlen attention backward (causal or full within each sample) for dk, dv (T,NKV,HS), FlashAttention-2 style, no atomics.
// A BxB workgroup owns B consecutive keys of kv head g (grid: x = key block, y = g) and loops
// over the query heads sharing g (GQA) and the query blocks that can see its keys (from its first
// key to the end of its last key's sample), recomputing P = exp(q k^T scale - lse):
//   dv_j += sum_t P_tj dout_t;  dk_j += sum_t dS_tj q_t scale,  dS = P (dout v^T - dd).
// Thread (x, y): scores query y against key x, then accumulates dims x, x+B, ... of key y.
override B: u32 = 16u;   // 16, or 8 when HS > 112 (shared memory: 4 tiles of B x HSP)
override HSP: u32 = 112u; // shared row stride >= HS (112 with B=16, 128 with B=8)
const NEG = -3.0e38;

struct P { dk_o: u32, dv_o: u32, q_o: u32, k_o: u32, v_o: u32, dout_o: u32, lse_o: u32, dd_o: u32, cu_o: u32,
  T: u32, NH: u32, NKV: u32, HS: u32, S: u32, scale: f32, causal: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dk: array<f32>;
@group(0) @binding(2) var<storage, read_write> dv: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read> dd: array<f32>;
@group(0) @binding(9) var<storage, read> cu: array<i32>;

var<workgroup> Qs: array<f32, B * HSP>;  // pre-scaled
var<workgroup> Os: array<f32, B * HSP>;  // dout rows
var<workgroup> Ks: array<f32, B * HSP>;
var<workgroup> Vs: array<f32, B * HSP>;
var<workgroup> Ps: array<f32, B * B>;
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
  let g = wid.y;
  let G = p.NH / p.NKV;
  let j0 = wid.x * B;
  let jy = min(j0 + y, p.T - 1u);
  for (var d = x; d < p.HS; d += B) {
    Ks[y * HSP + d] = k[p.k_o + (jy * p.NKV + g) * p.HS + d];
    Vs[y * HSP + d] = v[p.v_o + (jy * p.NKV + g) * p.HS + d];
  }
  let jx = j0 + x;                                              // key scored by this thread
  let qhi = u32(cu[p.cu_o + sampleIndex(min(j0 + B, p.T) - 1u) + 1u]); // exclusive (workgroup-uniform)
  let causal = p.causal != 0u;
  var qlo = j0; // causal: queries before the first key see none of the block
  if (!causal) { qlo = u32(cu[p.cu_o + sampleIndex(j0)]); }
  var accK: array<f32, 16>;
  var accV: array<f32, 16>;
  for (var hh = 0u; hh < G; hh++) {
    let h = g * G + hh;
    for (var t0 = qlo; t0 < qhi; t0 += B) {
      workgroupBarrier();
      let ty = min(t0 + y, p.T - 1u);
      for (var d = x; d < p.HS; d += B) {
        Qs[y * HSP + d] = q[p.q_o + (ty * p.NH + h) * p.HS + d] * p.scale;
        Os[y * HSP + d] = dout[p.dout_o + (ty * p.NH + h) * p.HS + d];
      }
      workgroupBarrier();
      let t = t0 + y;
      var pr = 0.0;
      var ds = 0.0;
      var vis = false;
      if (t < p.T) {
        let si = sampleIndex(t);
        vis = jx >= u32(cu[p.cu_o + si]) && select(jx < u32(cu[p.cu_o + si + 1u]), jx <= t, causal);
      }
      if (vis) {
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < p.HS; d++) {
          s += Qs[y * HSP + d] * Ks[x * HSP + d];
          dp += Os[y * HSP + d] * Vs[x * HSP + d];
        }
        pr = exp(s - lse[p.lse_o + t * p.NH + h]);
        ds = pr * (dp - dd[p.dd_o + t * p.NH + h]);
      }
      Ps[y * B + x] = pr;
      Ds[y * B + x] = ds;
      workgroupBarrier();
      for (var i = 0u; i * B + x < p.HS; i++) {
        let d = i * B + x;
        var av = accV[i];
        var ak = accK[i];
        for (var r = 0u; r < B; r++) {
          av += Ps[r * B + y] * Os[r * HSP + d];
          ak += Ds[r * B + y] * Qs[r * HSP + d];
        }
        accV[i] = av;
        accK[i] = ak;
      }
    }
  }
  let j = j0 + y;
  if (j >= p.T) { return; }
  for (var i = 0u; i * B + x < p.HS; i++) {
    let at = (j * p.NKV + g) * p.HS + i * B + x;
    dk[p.dk_o + at] += accK[i];
    dv[p.dv_o + at] += accV[i];
  }
}
