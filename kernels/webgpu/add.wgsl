// c (n) <- a (n) + b (n), f32. (c === a or c === b runs as axpy instead: see elementwise.ts.)
struct P { c_o: u32, a_o: u32, b_o: u32, n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < p.n) { c[p.c_o + i] = a[p.a_o + i] + b[p.b_o + i]; }
}
