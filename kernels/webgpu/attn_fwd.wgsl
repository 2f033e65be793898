// Varlen attention forward, causal or full within each sample, flash style (online softmax; no
// T x T matrix).
// q (T,NH,HS), k/v (T,NKV,HS), cu (S+1) i32 sample boundaries; out (T,NH,HS), lse (T,NH).
// A 16x16 workgroup takes 16 consecutive query tokens of one head h (grid: x = query block,
// y = head). It walks 16-key tiles from the start of its first token's sample to its last token;
// (r, c) scores query r against key c of the tile; thread (r, c) then owns dims c, c+16, ... of
// row r's output. A key j counts for query t iff start(t) <= j and j <= t (causal) or j < end(t)
// (full; end = the next sample's start).
const B = 16u;
const MAXHS = 128u;
const NEG = -3.0e38; // stands in for -inf (WGSL has no infinities)

struct P { o_o: u32, lse_o: u32, q_o: u32, k_o: u32, v_o: u32, cu_o: u32,
  T: u32, NH: u32, NKV: u32, HS: u32, S: u32, scale: f32, causal: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> cu: array<i32>;

var<workgroup> Qs: array<f32, 2048>; // [B][MAXHS], pre-scaled
var<workgroup> Ks: array<f32, 2048>;
var<workgroup> Vs: array<f32, 2048>;
var<workgroup> Ps: array<f32, 256>;  // [B][B]

/** Index s of the sample holding token t: the last s with cu[s] <= t (binary search). */
fn sampleIndex(t: u32) -> u32 {
  var lo = 0u;
  var hi = p.S; // invariant: cu[lo] <= t < cu[hi]
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (u32(cu[p.cu_o + mid]) <= t) { lo = mid; } else { hi = mid; }
  }
  return lo;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let c = lid.x;
  let r = lid.y;
  let h = wid.y;
  let kvh = h / (p.NH / p.NKV);
  let t0 = wid.x * B;
  let t = t0 + r;
  let valid = t < p.T;
  let tc = min(t, p.T - 1u);
  let si = sampleIndex(tc);
  let start = u32(cu[p.cu_o + si]);
  let end = u32(cu[p.cu_o + si + 1u]);
  let causal = p.causal != 0u;
  let jlo = u32(cu[p.cu_o + sampleIndex(t0)]); // the block's earliest key (workgroup-uniform)
  let tl = min(t0 + B, p.T) - 1u;              // the block's last token
  var jhi = tl + 1u;                           // exclusive
  if (!causal) { jhi = u32(cu[p.cu_o + sampleIndex(tl) + 1u]); }
  for (var d = c; d < p.HS; d += B) { Qs[r * MAXHS + d] = q[p.q_o + (tc * p.NH + h) * p.HS + d] * p.scale; }
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, 8>;                // dims c + 16 i, i < HS/16
  for (var j0 = jlo; j0 < jhi; j0 += B) {
    workgroupBarrier();
    let jr = min(j0 + r, p.T - 1u);
    for (var d = c; d < p.HS; d += B) {
      Ks[r * MAXHS + d] = k[p.k_o + (jr * p.NKV + kvh) * p.HS + d];
      Vs[r * MAXHS + d] = v[p.v_o + (jr * p.NKV + kvh) * p.HS + d];
    }
    workgroupBarrier();
    let j = j0 + c;
    let ok = j >= start && select(j < end, j <= tc, causal);
    var s = NEG;
    if (ok) {
      s = 0.0;
      for (var d = 0u; d < p.HS; d++) { s += Qs[r * MAXHS + d] * Ks[c * MAXHS + d]; }
    }
    Ps[r * B + c] = s;
    workgroupBarrier();
    var mx = m;
    for (var cc = 0u; cc < B; cc++) { mx = max(mx, Ps[r * B + cc]); }
    workgroupBarrier();
    var e = 0.0;
    if (ok) { e = exp(s - mx); }
    Ps[r * B + c] = e;
    workgroupBarrier();
    var sum = 0.0;
    for (var cc = 0u; cc < B; cc++) { sum += Ps[r * B + cc]; }
    let alpha = exp(m - mx);
    l = l * alpha + sum;
    m = mx;
    for (var i = 0u; i * B + c < p.HS; i++) {
      let d = i * B + c;
      var a = acc[i] * alpha;
      for (var cc = 0u; cc < B; cc++) { a += Ps[r * B + cc] * Vs[cc * MAXHS + d]; }
      acc[i] = a;
    }
  }
  if (!valid) { return; }
  for (var i = 0u; i * B + c < p.HS; i++) {
    o[p.o_o + (t * p.NH + h) * p.HS + i * B + c] = acc[i] / l;
  }
  if (c == 0u) { lse[p.lse_o + t * p.NH + h] = m + log(l); }
}
