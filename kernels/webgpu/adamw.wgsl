// AdamW (torch.optim.AdamW, foreach=False) on flat ranges of n: param, m (exp_avg), v (exp_avg_sq)
// updated in place from grad * gradScale. Bias corrections come from the host in f64:
// stepSize = lr / (1 - beta1^t), bc2sqrt = sqrt(1 - beta2^t), decay = 1 - lr * weightDecay.
struct P { w_o: u32, m_o: u32, v_o: u32, g_o: u32, n: u32, beta1: f32, beta2: f32, eps: f32,
  decay: f32, stepSize: f32, bc2sqrt: f32, gradScale: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let gr = g[p.g_o + i] * p.gradScale;
  let mi = p.beta1 * m[p.m_o + i] + (1.0 - p.beta1) * gr;
  let vi = p.beta2 * v[p.v_o + i] + (1.0 - p.beta2) * gr * gr;
  m[p.m_o + i] = mi;
  v[p.v_o + i] = vi;
  let denom = sqrt(vi) / p.bc2sqrt + p.eps;
  w[p.w_o + i] = w[p.w_o + i] * p.decay - p.stepSize * mi / denom;
}
