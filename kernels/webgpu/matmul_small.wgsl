// Plain shared-memory SGEMM: one output per invocation, 16x16 tiles, BK 16. Same contract and
// uniforms as matmul.wgsl. Its loops are short, so lavapipe's LLVM compiles it in well under a
// second where the register-blocked variants take many seconds; "auto" uses it on software
// adapters (CI), where GEMM speed is not a goal.
struct P { c_o: u32, a_o: u32, b_o: u32, M: u32, N: u32, K: u32, alpha: f32, beta: f32, ta: u32, tb: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

var<workgroup> As: array<f32, 256>; // [m][k]
var<workgroup> Bs: array<f32, 256>; // [k][n]

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let m = wid.y * 16u + ty;
  let n = wid.x * 16u + tx;
  var acc = 0.0;
  for (var k0 = 0u; k0 < p.K; k0 += 16u) {
    // As[ty][tx] = op(a)[m][k0+tx]; Bs[ty][tx] = op(b)[k0+ty][n]
    let gk = k0 + tx;
    var v = 0.0;
    if (m < p.M && gk < p.K) {
      if (p.ta != 0u) { v = a[p.a_o + gk * p.M + m]; } else { v = a[p.a_o + m * p.K + gk]; }
    }
    As[ty * 16u + tx] = v;
    let gk2 = k0 + ty;
    var w = 0.0;
    if (n < p.N && gk2 < p.K) {
      if (p.tb != 0u) { w = b[p.b_o + n * p.K + gk2]; } else { w = b[p.b_o + gk2 * p.N + n]; }
    }
    Bs[ty * 16u + tx] = w;
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) { acc = fma(As[ty * 16u + kk], Bs[kk * 16u + tx], acc); }
    workgroupBarrier();
  }
  if (m >= p.M || n >= p.N) { return; }
  let at = p.c_o + m * p.N + n;
  var r = p.alpha * acc;
  if (p.beta != 0.0) { r += p.beta * c[at]; }
  c[at] = r;
}
