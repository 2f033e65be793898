// Grouped SGEMM over the expert groups of a MoE layer, every group in ONE dispatch (Kernels
// groupedGemm): workgroup (x, y, e) computes the 16x16 output tile (y, x) of group e, whose rows
// n_e = off[e+1] - off[e] come from the offsets buffer on the device; tiles beyond the group's
// extent return at once (the grid is sized for the largest group, maxRows). One output per
// invocation, 16x16 shared tiles, BK 16, as matmul_small.wgsl (quick to compile on lavapipe).
// Per group: out_e (M,N) = alpha op(a_e) (M,K) op(b_e) (K,N) + beta out_e; M, N, K < 0 mean n_e;
// operand X_e starts at X_o + xE * e + xR * off[e], rows ldx apart.
struct P {
  c_o: u32, a_o: u32, b_o: u32, off_o: u32,
  M: i32, N: i32, K: i32, alpha: f32, beta: f32, ta: u32, tb: u32,
  cE: u32, cR: u32, ldc: u32, aE: u32, aR: u32, lda: u32, bE: u32, bR: u32, ldb: u32,
}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> off: array<i32>;

var<workgroup> As: array<f32, 256>; // [m][k]
var<workgroup> Bs: array<f32, 256>; // [k][n]
var<workgroup> row0: u32;
var<workgroup> row1: u32;

fn dim(d: i32, n: u32) -> u32 {
  if (d < 0) { return n; }
  return u32(d);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let e = wid.z;
  if (lid.x == 0u && lid.y == 0u) {
    row0 = u32(off[p.off_o + e]);
    row1 = u32(off[p.off_o + e + 1u]);
  }
  // uniform across the workgroup (loop bounds and the early return below depend on them)
  let r0 = workgroupUniformLoad(&row0);
  let n = workgroupUniformLoad(&row1) - r0;
  let M = dim(p.M, n);
  let N = dim(p.N, n);
  let K = dim(p.K, n);
  if (wid.y * 16u >= M || wid.x * 16u >= N) { return; }
  let cb = p.c_o + p.cE * e + p.cR * r0;
  let ab = p.a_o + p.aE * e + p.aR * r0;
  let bb = p.b_o + p.bE * e + p.bR * r0;
  let tx = lid.x;
  let ty = lid.y;
  let m = wid.y * 16u + ty;
  let nn = wid.x * 16u + tx;
  var acc = 0.0;
  for (var k0 = 0u; k0 < K; k0 += 16u) {
    // As[ty][tx] = op(a)[m][k0+tx]; Bs[ty][tx] = op(b)[k0+ty][nn]
    let gk = k0 + tx;
    var v = 0.0;
    if (m < M && gk < K) {
      if (p.ta != 0u) { v = a[ab + gk * p.lda + m]; } else { v = a[ab + m * p.lda + gk]; }
    }
    As[ty * 16u + tx] = v;
    let gk2 = k0 + ty;
    var w = 0.0;
    if (nn < N && gk2 < K) {
      if (p.tb != 0u) { w = b[bb + nn * p.ldb + gk2]; } else { w = b[bb + gk2 * p.ldb + nn]; }
    }
    Bs[ty * 16u + tx] = w;
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) { acc = fma(As[ty * 16u + kk], Bs[kk * 16u + tx], acc); }
    workgroupBarrier();
  }
  if (m >= M || nn >= N) { return; }
  let at = cb + m * p.ldc + nn;
  var r = p.alpha * acc;
  if (p.beta != 0.0) { r += p.beta * c[at]; }
  c[at] = r;
}
