// Tiled SGEMM, row-major: c (M,N) <- alpha * op(a) @ op(b) + beta * c.
// op(a) (M,K) is a (M,K), or a (K,M) when p.ta; op(b) (K,N) is b (K,N), or b (N,K) when p.tb.
// The transposes are uniforms, not pipeline constants: one compile per variant (LLVM in lavapipe
// takes seconds per pipeline), and the branch is uniform and only in the tile loads.
// A 16x16 workgroup computes a BM x BN tile of c; each invocation a TM x TN block of registers at
// rows ty + 16i, cols tx + 16j (strided, so shared-memory reads and global writes are contiguous
// across tx). K advances BK at a time through two shared tiles. beta = 0 overwrites c without
// reading it (NaNs in c do not propagate). matmul.ts picks the variant (its `defines` replace the
// consts and the ST alias below: 128x128 / 64x64 tiles, shared tiles in f32 or f16).
const BM = 128u;
const BN = 128u;
const BK = 8u;
const TM = 8u;   // BM / 16
const TN = 8u;   // BN / 16
alias ST = f32;  // shared-tile element type (f16 halves shared traffic; accumulation stays f32)

const LOADS_A = BK * BM / 256u;
const LOADS_B = BK * BN / 256u;

struct P { c_o: u32, a_o: u32, b_o: u32, M: u32, N: u32, K: u32, alpha: f32, beta: f32, ta: u32, tb: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

var<workgroup> As: array<ST, BK * BM>; // [BK][BM]
var<workgroup> Bs: array<ST, BK * BN>; // [BK][BN]

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let tid = ty * 16u + tx;
  let TRANS_A = p.ta != 0u;
  let TRANS_B = p.tb != 0u;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  var acc: array<f32, TM * TN>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    // Stage both tiles; the fastest-varying thread index walks the contiguous global dimension.
    for (var r = 0u; r < LOADS_A; r++) {
      let e = tid + r * 256u;
      var kk: u32; var mm: u32;
      if (TRANS_A) { mm = e % BM; kk = e / BM; } else { kk = e % BK; mm = e / BK; }
      let gm = m0 + mm; let gk = k0 + kk;
      var v = 0.0;
      if (gm < p.M && gk < p.K) {
        if (TRANS_A) { v = a[p.a_o + gk * p.M + gm]; } else { v = a[p.a_o + gm * p.K + gk]; }
      }
      As[kk * BM + mm] = ST(v);
    }
    for (var r = 0u; r < LOADS_B; r++) {
      let e = tid + r * 256u;
      var kk: u32; var nn: u32;
      if (TRANS_B) { kk = e % BK; nn = e / BK; } else { nn = e % BN; kk = e / BN; }
      let gn = n0 + nn; let gk = k0 + kk;
      var w = 0.0;
      if (gn < p.N && gk < p.K) {
        if (TRANS_B) { w = b[p.b_o + gn * p.K + gk]; } else { w = b[p.b_o + gk * p.N + gn]; }
      }
      Bs[kk * BN + nn] = ST(w);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var ar: array<f32, TM>;
      var br: array<f32, TN>;
      for (var i = 0u; i < TM; i++) { ar[i] = f32(As[kk * BM + ty + 16u * i]); }
      for (var j = 0u; j < TN; j++) { br[j] = f32(Bs[kk * BN + tx + 16u * j]); }
      for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { acc[i * TN + j] = fma(ar[i], br[j], acc[i * TN + j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < TM; i++) {
    let gm = m0 + ty + 16u * i;
    if (gm >= p.M) { continue; }
    for (var j = 0u; j < TN; j++) {
      let gn = n0 + tx + 16u * j;
      if (gn >= p.N) { continue; }
      let at = p.c_o + gm * p.N + gn;
      var v = p.alpha * acc[i * TN + j];
      if (p.beta != 0.0) { v += p.beta * c[at]; }
      c[at] = v;
    }
  }
}
