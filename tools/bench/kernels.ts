// Kernel benchmark: the measured f32 and bf16 peaks of this CPU (the MFU denominators); the GEMM
// libraries per shape class of the models (OpenBLAS sgemm, oneDNN sgemm, the mixed-precision bf16
// GEMM with its operand casts), the evidence for the f32 GEMM choice in kernels/cpu/index.ts; our
// sgemm vs numpy and PyTorch (same thread count, same run), then per-op timings at the "small" Llama shape of shared/bench
// (V 32000, C 512, 8/2 heads, HS 64, I 1376) on a packed row of T = 4 x 512 tokens (cross-entropy:
// 512 rows), beside the same ops in PyTorch 1.13 eager. Usage:
//   npx bun tools/bench/kernels.ts --backend cpu [--threads 1,2] [--quick]   (or: bun run bench kernels ...)
// Prints human lines; the LAST line is one JSON object with all figures and ratios.
import { spawnSync } from "node:child_process";
import { cpuSummary, createCpuKernels, peakFlops, ropeCosSin, ropeInvFreq, type Kernels, type Tensor } from "../../kernels/index.ts";

type T32 = Tensor<"f32">;

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

// The machine is shared: wall times swing with other engineers' load, so every op also reports
// process CPU time (user+sys), which at 1 thread is the op's own work. Ratios use CPU time at
// 1 thread and wall time otherwise.
const cpuTimes: Record<string, number> = {};

/** Median wall time in ms of fn over reps runs (after one warm-up); the median CPU ms goes to cpuTimes[name]. */
function timeOp(fn: () => void, reps: number, name = ""): number {
  fn();
  const ts: number[] = [], cs: number[] = [];
  for (let i = 0; i < reps; i++) {
    const c0 = process.cpuUsage(), t0 = performance.now();
    fn();
    ts.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cs.push((c.user + c.system) / 1e3);
  }
  ts.sort((a, b) => a - b);
  cs.sort((a, b) => a - b);
  if (name) cpuTimes[name] = cs[Math.floor(cs.length / 2)];
  return ts[Math.floor(ts.length / 2)];
}

function rand(k: Kernels, shape: number[], scale = 1): T32 {
  const t = k.alloc(shape);
  const h = t.host as Float32Array;
  let s = 12345;
  for (let i = 0; i < h.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    h[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return t;
}

// PyTorch/numpy reference, one process per thread count (OpenBLAS reads its env at load).
const PY = String.raw`
import json, math, sys, time
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(int(sys.argv[1])); quick = sys.argv[2] == "1"
CPU = {}
def med(fn, reps, name=None):
    fn(); ts = []; cs = []
    for _ in range(reps):
        c0 = time.process_time(); t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3); cs.append((time.process_time() - c0) * 1e3)
    ts.sort(); cs.sort()
    if name: CPU[name] = cs[len(cs) // 2]
    return ts[len(ts) // 2]
R = {}
for n in (1024, 2048):
    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
    R[f"numpy_sgemm_{n}"] = 2 * n**3 / (med(lambda: a @ b, 3) * 1e6)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    R[f"torch_sgemm_{n}"] = 2 * n**3 / (med(lambda: ta @ tb, 3) * 1e6)
T, C, NH, NKV, HS, I, V, L = 2048, 512, 8, 2, 64, 1376, 32000, 512
reps = 2 if quick else 5
x = torch.randn(T, C, requires_grad=True); W = torch.randn(I, C, requires_grad=True) * 0.02
W = W.detach().requires_grad_(); dy = torch.randn(T, I)
R["linear_fwd"] = med(lambda: F.linear(x, W), reps, "linear_fwd")
R["linear_fwdbwd"] = med(lambda: F.linear(x, W).backward(dy), reps, "linear_fwdbwd")
w = torch.ones(C, requires_grad=True); dC = torch.randn(T, C)
rms = lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
R["rmsnorm_fwd"] = med(rms, reps, "rmsnorm_fwd"); R["rmsnorm_fwdbwd"] = med(lambda: rms().backward(dC), reps, "rmsnorm_fwdbwd")
q = torch.randn(T, NH, HS, requires_grad=True); k = torch.randn(T, NKV, HS, requires_grad=True); v = torch.randn(T, NKV, HS, requires_grad=True)
inv = 1.0 / (10000 ** (torch.arange(0, HS, 2).float() / HS)); f = torch.outer(torch.arange(L).float(), inv).repeat(T // L, 1)
emb = torch.cat([f, f], -1); cos, sin = emb.cos()[:, None], emb.sin()[:, None]
def rope():
    return q * cos + torch.cat([-q[..., HS // 2:], q[..., :HS // 2]], -1) * sin
R["rope_fwd"] = med(rope, reps, "rope_fwd")
mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
def attn():
    outs = []
    for s in range(T // L):
        qs = q[s*L:(s+1)*L].transpose(0, 1); ks = k[s*L:(s+1)*L].transpose(0, 1).repeat_interleave(NH // NKV, 0)
        vs = v[s*L:(s+1)*L].transpose(0, 1).repeat_interleave(NH // NKV, 0)
        sc = (qs @ ks.transpose(1, 2) / math.sqrt(HS)).masked_fill(mask, float("-inf"))
        outs.append((torch.softmax(sc, -1) @ vs).transpose(0, 1))
    return torch.cat(outs, 0)
dq = torch.randn(T, NH, HS)
R["attention_fwd"] = med(attn, reps, "attention_fwd"); R["attention_fwdbwd"] = med(lambda: attn().backward(dq), reps, "attention_fwdbwd")
g = torch.randn(T, I, requires_grad=True); u = torch.randn(T, I, requires_grad=True)
R["swiglu_fwd"] = med(lambda: F.silu(g) * u, reps, "swiglu_fwd"); R["swiglu_fwdbwd"] = med(lambda: (F.silu(g) * u).backward(dy), reps, "swiglu_fwdbwd")
TC = 512  # cross-entropy rows (V = 32000 makes it the heaviest op; kept short)
h = torch.randn(TC, C, requires_grad=True); Wv = (torch.randn(V, C) * 0.02).requires_grad_(); tg = torch.randint(0, V, (TC,))
R["ce_fwd"] = med(lambda: F.cross_entropy(h @ Wv.t(), tg, reduction="sum"), reps, "ce_fwd")
R["ce_fwdbwd"] = med(lambda: F.cross_entropy(h @ Wv.t(), tg, reduction="sum").backward(), reps, "ce_fwdbwd")
P = torch.nn.Parameter(torch.randn(10_000_000)); P.grad = torch.randn(10_000_000)
opt = torch.optim.AdamW([P], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
R["adamw_10M"] = med(opt.step, reps, "adamw_10M")
R["cpu"] = CPU
print(json.dumps(R))
`;

function pythonRef(threads: number, quick: boolean): Record<string, number> | null {
  // OMP_WAIT_POLICY=PASSIVE: tuned PyTorch (PLATFORM.md); spinning OpenMP threads collapse on a shared 2-core box.
  const env = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads), OMP_WAIT_POLICY: "PASSIVE" };
  const r = spawnSync("/usr/bin/python3", ["-c", PY, String(threads), quick ? "1" : "0"], { env, encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) {
    console.log(`python reference failed (status ${r.status}): ${(r.stderr || "").split("\n").slice(-3).join(" ")}`);
    return null;
  }
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

/** Our ops at the same shapes as the Python block above. */
function opTimes(k: Kernels, reps: number, only?: string[]): Record<string, number> {
  const T = 2048, C = 512, NH = 8, NKV = 2, HS = 64, I = 1376, V = 32000, L = 512;
  const o: Record<string, number> = {};
  const time = (fn: () => void, n: number, name: string) => (only && !only.includes(name) ? NaN : timeOp(fn, n, name));
  const x = rand(k, [T, C]), W = rand(k, [I, C], 0.02), y = k.alloc([T, I]), dy = rand(k, [T, I]);
  const dx = k.alloc([T, C]), dW = k.alloc([I, C]);
  o.linear_fwd = time(() => k.linearForward(y, x, W, null, T, C, I), reps, "linear_fwd");
  o.linear_bwd = time(() => k.linearBackward(dx, dW, null, dy, x, W, T, C, I), reps, "linear_bwd");
  const w = rand(k, [C]), xo = k.alloc([T, C]), rstd = k.alloc([T]), dC = rand(k, [T, C]), dw = k.alloc([C]);
  o.rmsnorm_fwd = time(() => k.rmsnormForward(xo, rstd, x, w, T, C, 1e-6), reps, "rmsnorm_fwd");
  o.rmsnorm_bwd = time(() => k.rmsnormBackward(dx, dw, dC, x, w, rstd, T, C), reps, "rmsnorm_bwd");
  const q = rand(k, [T, NH, HS]), kk = rand(k, [T, NKV, HS]), v = rand(k, [T, NKV, HS]), qo = k.alloc([T, NH, HS]);
  const { cos, sin } = ropeCosSin(ropeInvFreq({ dim: HS, theta: 10000 }), L);
  const cosT = k.alloc([L, HS / 2]), sinT = k.alloc([L, HS / 2]), pos = k.alloc([T], "i32");
  k.upload(cosT, cos);
  k.upload(sinT, sin);
  k.upload(pos, Int32Array.from({ length: T }, (_, t) => t % L));
  o.rope_fwd = time(() => k.ropeForward(qo, q, cosT, sinT, pos, T, NH, HS), reps, "rope_fwd");
  o.rope_bwd = time(() => k.ropeBackward(qo, q, cosT, sinT, pos, T, NH, HS), reps, "rope_bwd");
  const cu = k.alloc([T / L + 1], "i32"), lse = k.alloc([T, NH]);
  k.upload(cu, Int32Array.from({ length: T / L + 1 }, (_, s) => s * L));
  const dq = k.alloc([T, NH, HS]), dk = k.alloc([T, NKV, HS]), dv = k.alloc([T, NKV, HS]), dout = rand(k, [T, NH, HS]);
  o.attention_fwd = time(() => k.attentionForward(qo, lse, q, kk, v, cu, T, NH, NKV, HS, 0.125, true), reps, "attention_fwd");
  o.attention_bwd = time(() => k.attentionBackward(dq, dk, dv, dout, q, kk, v, qo, lse, cu, T, NH, NKV, HS, 0.125, true), reps, "attention_bwd");
  const g = rand(k, [T, I]), u = rand(k, [T, I]), dg = k.alloc([T, I]), du = k.alloc([T, I]);
  o.swiglu_fwd = time(() => k.swigluForward(y, g, u, T * I), reps, "swiglu_fwd");
  o.swiglu_bwd = time(() => k.swigluBackward(dg, du, dy, g, u, T * I), reps, "swiglu_bwd");
  const TC = 512; // cross-entropy rows (the heaviest op at V = 32000; kept short)
  const Wv = rand(k, [V, C], 0.02), dWv = k.alloc([V, C]), loss = k.alloc([1]), tg = k.alloc([TC], "i32");
  const xc = k.view(x, 0, [TC, C]), dxc = k.view(dx, 0, [TC, C]);
  k.upload(tg, Int32Array.from({ length: TC }, (_, t) => (t * 7919) % V));
  o.ce_fwd = time(() => k.crossEntropyFused(loss, null, null, xc, Wv, tg, TC, C, V, 1), reps, "ce_fwd");
  o.ce_fwdbwd = time(() => k.crossEntropyFused(loss, dxc, dWv, xc, Wv, tg, TC, C, V, 1 / TC), reps, "ce_fwdbwd");
  const n = 10_000_000, P = rand(k, [n]), G = rand(k, [n]), M = k.alloc([n]), Vv = k.alloc([n]);
  let step = 0;
  o.adamw_10M = time(() => k.adamw(P, G, M, Vv, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: ++step, gradScale: 1 }), reps, "adamw_10M");
  return o;
}

/** GFLOP/s per CPU second of one GEMM shape (op(A) (M,K), B^T (N,K) as in linear layers). */
function shapeGflops(k: Kernels, M: number, N: number, K: number, reps: number, name: string): number {
  const a = rand(k, [M, K]), b = rand(k, [N, K]), c = k.alloc([M, N]);
  timeOp(() => k.gemm(c, a, b, M, N, K, false, true, 1, 0), reps, name);
  const r = (2 * M * N * K) / (cpuTimes[name] * 1e6);
  for (const t of [a, b, c]) k.free(t);
  return r;
}

// GEMM shape classes of the small/100m models at T = 2048: QKV/O and MLP projections, the LM head
// chunk (512 rows x V), an attention score block (BR 64 x BC 512 x HS 64).
const SHAPES: [string, number, number, number][] = [
  ["proj 2048x512x512", 2048, 512, 512], ["mlp_up 2048x2752x512", 2048, 2752, 512], ["mlp_down 2048x512x1376", 2048, 512, 1376],
  ["lm_head 512x32000x512", 512, 32000, 512], ["attn_block 64x512x64", 64, 512, 64], ["square 2048^3", 2048, 2048, 2048],
];

function gemmLibraries(th: number, reps: number): Record<string, Record<string, number>> {
  const libs: [string, Kernels][] = [
    ["openblas", createCpuKernels({ threads: th, f32Gemm: "openblas" })],
    ["onednn", createCpuKernels({ threads: th, f32Gemm: "onednn" })],
    ["bf16 (mixed, casts included)", createCpuKernels({ threads: th, mixedPrecision: true })],
  ];
  const res: Record<string, Record<string, number>> = {};
  console.log(`GEMM GFLOP/s per CPU second / threads (${th} threads): ${libs.map(([n]) => n).join(" | ")}`);
  for (const [shape, M, N, K] of SHAPES) {
    res[shape] = {};
    for (const [lib, k] of libs) res[shape][lib] = shapeGflops(k, M, N, K, reps, `${lib}:${shape}`) * th;
    console.log(`  ${shape.padEnd(24)} ${libs.map(([n]) => res[shape][n].toFixed(0).padStart(6)).join(" | ")}`);
  }
  return res;
}

function sgemmGflopsCpu(k: Kernels, n: number, reps: number): { wall: number; cpu: number } {
  const a = rand(k, [n, n]), b = rand(k, [n, n]), c = k.alloc([n, n]);
  const ms = timeOp(() => k.gemm(c, a, b, n, n, n, false, false, 1, 0), reps, `sgemm_${n}`);
  const fl = 2 * n * n * n;
  return { wall: fl / (ms * 1e6), cpu: fl / (cpuTimes[`sgemm_${n}`] * 1e6) };
}

export async function main(args: string[]): Promise<void> {
  const backend = arg(args, "backend", "cpu");
  if (backend !== "cpu") throw new Error(`bench kernels: --backend ${backend} is not handled here (cpu only; webgpu has tools/bench/webgpu.ts)`);
  const threadList = arg(args, "threads", "1,2").split(",").map(Number);
  const quick = args.includes("--quick");
  const reps = quick ? 2 : 3;
  const out: Record<string, unknown> = {
    bench: "kernels", backend, machine: `${cpuSummary()} (shared)`,
    // one-thread peaks in CPU time (kernels/cpu/fast/peak.ts): f32 FMA chains; bf16 vdpbf16ps, AMX GEMM, or f32 when emulated
    peak_gflops_per_thread: { f32: Math.round(peakFlops(1, "f32") / 1e9), bf16: Math.round(peakFlops(1, "bf16") / 1e9) },
    shape: "small: T 2048 (4x512), C 512, NH 8, NKV 2, HS 64, I 1376, V 32000 (cross-entropy: 512 rows)",
  };
  console.log(`peak GFLOP/s per thread: ${JSON.stringify(out.peak_gflops_per_thread)}`);
  for (const th of threadList) {
    for (const key of Object.keys(cpuTimes)) delete cpuTimes[key];
    const libs = gemmLibraries(th, reps);
    const k = createCpuKernels({ threads: th });
    const km = createCpuKernels({ threads: th, mixedPrecision: true });
    console.log(`== ${k.description}`);
    for (const key of Object.keys(cpuTimes)) delete cpuTimes[key];
    const mixedOps = opTimes(km, reps, ["linear_fwd", "linear_bwd", "ce_fwd", "ce_fwdbwd"]);
    const mixedCpu = { ...cpuTimes };
    for (const key of Object.keys(cpuTimes)) delete cpuTimes[key];
    const g1 = sgemmGflopsCpu(k, 1024, 3), g2 = sgemmGflopsCpu(k, 2048, 3);
    const ops = opTimes(k, reps);
    const opsCpu = { ...cpuTimes };
    const py = pythonRef(th, quick);
    const pc = (py?.cpu ?? {}) as unknown as Record<string, number>;
    console.log(`sgemm GFLOP/s (wall)  1024: ours ${g1.wall.toFixed(1)}  numpy ${py?.numpy_sgemm_1024.toFixed(1)}  torch ${py?.torch_sgemm_1024.toFixed(1)}`);
    console.log(`sgemm GFLOP/s (wall)  2048: ours ${g2.wall.toFixed(1)}  numpy ${py?.numpy_sgemm_2048.toFixed(1)}  torch ${py?.torch_sgemm_2048.toFixed(1)}`);
    if (th === 1) console.log(`sgemm GFLOP/s (per CPU second, 1 thread): 1024 ${g1.cpu.toFixed(1)}  2048 ${g2.cpu.toFixed(1)}`);
    // torch backward = (forward+backward) - forward, for wall and CPU time alike
    const torchWall: Record<string, number> = {}, torchCpu: Record<string, number> = {};
    if (py) {
      for (const [src, wall] of [[py as Record<string, number>, torchWall], [pc, torchCpu]] as const) {
        for (const op of ["linear", "rmsnorm", "attention", "swiglu", "ce"]) wall[`${op}_fwd`] = src[`${op}_fwd`];
        for (const op of ["linear", "rmsnorm", "attention", "swiglu"]) wall[`${op}_bwd`] = src[`${op}_fwdbwd`] - src[`${op}_fwd`];
        wall.rope_fwd = src.rope_fwd;
        wall.ce_fwdbwd = src.ce_fwdbwd;
        wall.adamw_10M = src.adamw_10M;
      }
    }
    const basis = th === 1 ? "cpu" : "wall";
    console.log(`op (ms, median of ${reps})   ours wall  torch wall   ours cpu  torch cpu   torch/ours (${basis})`);
    const ratios: Record<string, number> = {};
    const f = (x: number | undefined) => (x === undefined ? "-" : x.toFixed(1)).padStart(10);
    for (const [name, ms] of Object.entries(ops)) {
      const tw = torchWall[name], tc = torchCpu[name];
      const ratio = th === 1 ? tc / opsCpu[name] : tw / ms;
      if (Number.isFinite(ratio)) ratios[name] = ratio;
      console.log(`  ${name.padEnd(16)}${f(ms)}${f(tw)}${f(opsCpu[name])}${f(tc)}   ${Number.isFinite(ratio) ? ratio.toFixed(2) : "-"}`);
    }
    out[`threads_${th}`] = {
      sgemm_gflops: { 1024: g1.wall, 2048: g2.wall }, sgemm_gflops_per_cpu_s: { 1024: g1.cpu, 2048: g2.cpu },
      numpy_gflops: py ? { 1024: py.numpy_sgemm_1024, 2048: py.numpy_sgemm_2048 } : null,
      torch_gflops: py ? { 1024: py.torch_sgemm_1024, 2048: py.torch_sgemm_2048 } : null,
      sgemm_vs_numpy_2048: py ? g2.wall / py.numpy_sgemm_2048 : null,
      ops_ms: ops, ops_cpu_ms: opsCpu, torch_ops_ms: torchWall, torch_ops_cpu_ms: torchCpu,
      torch_over_ours: ratios, ratio_basis: basis,
      gemm_gflops_per_cpu_s_by_library: libs,
      mixed_ops_ms: Object.fromEntries(Object.entries(mixedOps).filter(([, v]) => Number.isFinite(v))), mixed_ops_cpu_ms: mixedCpu,
    };
    console.log(`mixed precision (bf16 GEMM operands), cpu ms: ${Object.entries(mixedCpu).map(([n, v]) => `${n} ${v.toFixed(1)}`).join("  ")}`);
  }
  console.log(JSON.stringify(out));
}

if (import.meta.main) await main(process.argv.slice(2));
