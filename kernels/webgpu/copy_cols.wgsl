// Strided column copy: y[n*yW + yOff + j*yS] (+)= x[n*xW + xOff + j*xS], n < N, j < width.
// One thread per (n, j); the written elements are distinct by the op's contract.
struct P { y_o: u32, x_o: u32, N: u32, width: u32, yW: u32, yOff: u32, yS: u32, xW: u32, xOff: u32, xS: u32, acc: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.N * p.width) { return; }
  let n = i / p.width;
  let j = i % p.width;
  let d = p.y_o + n * p.yW + p.yOff + j * p.yS;
  let v = x[p.x_o + n * p.xW + p.xOff + j * p.xS];
  if (p.acc != 0u) { y[d] = y[d] + v; } else { y[d] = v; }
}
