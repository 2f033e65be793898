// Rotary embedding in place (out === inp, how models rotate q and k): x (T,NH,HS) <- rope(x).
// Same math as rope.wgsl's forward; each thread reads its pair (i, i + HS/2) before writing it,
// so one binding suffices and no copy of x is needed.
struct P { x_o: u32, cos_o: u32, sin_o: u32, pos_o: u32, T: u32, NH: u32, HS: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> cosT: array<f32>;
@group(0) @binding(3) var<storage, read> sinT: array<f32>;
@group(0) @binding(4) var<storage, read> pos: array<i32>;

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let half = p.HS / 2u;
  let k = gid.x + gid.y * nwg.x * 256u;
  let th = k / half;                 // t * NH + h
  if (th >= p.T * p.NH) { return; }
  let i = k % half;
  let at = p.x_o + th * p.HS + i;
  let ang = u32(pos[p.pos_o + th / p.NH]) * half + i;
  let c = cosT[p.cos_o + ang];
  let s = sinT[p.sin_o + ang];
  let x1 = x[at];
  let x2 = x[at + half];
  x[at] = x1 * c - x2 * s;
  x[at + half] = x2 * c + x1 * s;
}
