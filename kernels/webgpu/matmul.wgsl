// Tiled SGEMM, row-major: c (M,N) <- alpha * op(a) @ op(b) + beta * c.
// op(a) (M,K) is a (M,K), or a (K,M) when TRANS_A; op(b) (K,N) is b (K,N), or b (N,K) when TRANS_B.
// A 16x16 workgroup computes a 128x128 tile of c; each invocation an 8x8 block of registers at
// rows ty + 16i, cols tx + 16j (strided, so shared-memory reads and global writes are contiguous
// across tx). K advances BK=8 at a time through two shared tiles (8 KiB). beta = 0 overwrites c
// without reading it (so NaNs in c do not propagate).
override TRANS_A: bool = false;
override TRANS_B: bool = false;

const BM = 128u;
const BN = 128u;
const BK = 8u;

struct P { c_o: u32, a_o: u32, b_o: u32, M: u32, N: u32, K: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let tid = ty * 16u + tx;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  var acc: array<f32, 64>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    // Each invocation stages 4 elements of each tile; the fastest-varying thread index walks the
    // contiguous dimension in global memory.
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      var kk: u32; var mm: u32;
      if (TRANS_A) { mm = e % BM; kk = e / BM; } else { kk = e % BK; mm = e / BK; }
      let gm = m0 + mm; let gk = k0 + kk;
      var v = 0.0;
      if (gm < p.M && gk < p.K) {
        if (TRANS_A) { v = a[p.a_o + gk * p.M + gm]; } else { v = a[p.a_o + gm * p.K + gk]; }
      }
      As[kk * BM + mm] = v;
      var nn: u32;
      if (TRANS_B) { kk = e % BK; nn = e / BK; } else { nn = e % BN; kk = e / BN; }
      let gn = n0 + nn; let gk2 = k0 + kk;
      var w = 0.0;
      if (gn < p.N && gk2 < p.K) {
        if (TRANS_B) { w = b[p.b_o + gn * p.K + gk2]; } else { w = b[p.b_o + gk2 * p.N + gn]; }
      }
      Bs[kk * BN + nn] = w;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var ar: array<f32, 8>;
      var br: array<f32, 8>;
      for (var i = 0u; i < 8u; i++) { ar[i] = As[kk * BM + ty + 16u * i]; }
      for (var j = 0u; j < 8u; j++) { br[j] = Bs[kk * BN + tx + 16u * j]; }
      for (var i = 0u; i < 8u; i++) {
        for (var j = 0u; j < 8u; j++) { acc[i * 8u + j] = fma(ar[i], br[j], acc[i * 8u + j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 8u; i++) {
    let gm = m0 + ty + 16u * i;
    if (gm >= p.M) { continue; }
    for (var j = 0u; j < 8u; j++) {
      let gn = n0 + tx + 16u * j;
      if (gn >= p.N) { continue; }
      let at = p.c_o + gm * p.N + gn;
      var v = p.alpha * acc[i * 8u + j];
      if (p.beta != 0.0) { v += p.beta * c[at]; }
      c[at] = v;
    }
  }
}
