// Rotary embedding (HF rotate_half), x (T,NH,HS), cos/sin (P, HS/2), positions (T) i32.
// One thread per (t, h, i < HS/2) rotates the pair (i, i + HS/2) by angle positions[t] * inv_freq[i].
// forward:  y <- (x1 c - x2 s, x2 c + x1 s)      backward: y += (x1 c + x2 s, x2 c - x1 s) (the transpose)
struct P { y_o: u32, x_o: u32, cos_o: u32, sin_o: u32, pos_o: u32, T: u32, NH: u32, HS: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> cosT: array<f32>;
@group(0) @binding(4) var<storage, read> sinT: array<f32>;
@group(0) @binding(5) var<storage, read> pos: array<i32>;

fn pair(gid: vec3u, nwg: vec3u) -> vec4u {
  let half = p.HS / 2u;
  let k = gid.x + gid.y * nwg.x * 256u;
  let th = k / half;                 // t * NH + h
  let i = k % half;
  let t = th / p.NH;
  let base = th * p.HS + i;
  return vec4u(base, t, i, u32(th < p.T * p.NH));
}

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let q = pair(gid, nwg);
  if (q.w == 0u) { return; }
  let half = p.HS / 2u;
  let ang = u32(pos[p.pos_o + q.y]) * half + q.z;
  let c = cosT[p.cos_o + ang];
  let s = sinT[p.sin_o + ang];
  let x1 = x[p.x_o + q.x];
  let x2 = x[p.x_o + q.x + half];
  y[p.y_o + q.x] = x1 * c - x2 * s;
  y[p.y_o + q.x + half] = x2 * c + x1 * s;
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let q = pair(gid, nwg);
  if (q.w == 0u) { return; }
  let half = p.HS / 2u;
  let ang = u32(pos[p.pos_o + q.y]) * half + q.z;
  let c = cosT[p.cos_o + ang];
  let s = sinT[p.sin_o + ang];
  let d1 = x[p.x_o + q.x];
  let d2 = x[p.x_o + q.x + half];
  y[p.y_o + q.x] += d1 * c + d2 * s;
  y[p.y_o + q.x + half] += d2 * c - d1 * s;
}
