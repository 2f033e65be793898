// Mixed-precision GEMM operands (train.enable_mixed_precision on WebGPU; mixed.ts): each operand
// is scaled by a power of two chosen from its own max |x|, rounded to f16, and scaled back, all in
// f32 storage, so the f32 GEMM that follows multiplies f16 values and accumulates in f32.
//   amax2: slots[0] = max |a|, slots[1] = max |b| as f32 bits (u32 order = float order for
//          non-negative floats, so atomicMax works on bits; NaN's bits exceed inf's)
//   f16_cast.wgsl: ya = f16(a * sa) / sa, yb = f16(b * sb) / sb, sa = 2^(15 - e) for max |a| in
//          [2^(e-1), 2^e): the largest scaled value lies in [2^14, 2^15), far from f16's 65504,
//          and values down to 2^-39 of the max keep f16 precision (f16 subnormals reach 2^-24).
struct P { s_o: u32, a_o: u32, b_o: u32, na: u32, nb: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> slots: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

var<workgroup> red: array<u32, 512>;

@compute @workgroup_size(256)
fn amax2(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) ng: vec3u) {
  let stride = ng.x * 256u;
  var ma = 0u;
  var mb = 0u;
  for (var i = wid.x * 256u + lid.x; i < p.na; i += stride) { ma = max(ma, bitcast<u32>(abs(a[p.a_o + i]))); }
  for (var i = wid.x * 256u + lid.x; i < p.nb; i += stride) { mb = max(mb, bitcast<u32>(abs(b[p.b_o + i]))); }
  red[lid.x] = ma;
  red[256u + lid.x] = mb;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      red[lid.x] = max(red[lid.x], red[lid.x + s]);
      red[256u + lid.x] = max(red[256u + lid.x], red[256u + lid.x + s]);
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    atomicMax(&slots[p.s_o], red[0]);
    atomicMax(&slots[p.s_o + 1u], red[256]);
  }
}
