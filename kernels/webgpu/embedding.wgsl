// Token embedding, table (V,C) row-major, ids (T) i32.
// forward:  y (T,C) <- table[ids[t]]; an id outside [0,V) writes zeros and flags error code 1.
// backward: y = dtable (V,C) += dout (T,C)[t] at row ids[t]. One thread per channel walks the
//           tokens in order: deterministic (no float atomics in WGSL) and race-free, since two
//           tokens with the same id hit the same row only within one thread.
struct P { y_o: u32, x_o: u32, ids_o: u32, err_o: u32, T: u32, C: u32, V: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> ids: array<i32>;
@group(0) @binding(4) var<storage, read_write> err: array<atomic<i32>>;

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.T * p.C) { return; }
  let t = i / p.C;
  let c = i % p.C;
  let id = ids[p.ids_o + t];
  if (id < 0 || u32(id) >= p.V) {
    atomicOr(&err[p.err_o], 1);
    atomicStore(&err[p.err_o + 1u], id);
    y[p.y_o + i] = 0.0;
    return;
  }
  y[p.y_o + i] = x[p.x_o + u32(id) * p.C + c];
}

@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= p.C) { return; }
  for (var t = 0u; t < p.T; t++) {
    let id = ids[p.ids_o + t];
    if (id < 0 || u32(id) >= p.V) { continue; }
    y[p.y_o + u32(id) * p.C + c] += x[p.x_o + t * p.C + c];
  }
}
