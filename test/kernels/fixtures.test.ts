// Kernels against PyTorch 1.13 numbers (test/fixtures/kernels/kernels.json, made by
// gen_kernels.py next to it): forward outputs and gradients, on the fast CPU path and the
// reference, plus the host-side rope tables, AdamW + clipping and the LR schedule.
import { describe, expect, test } from "bun:test";
import {
  clipCoefficient, createCpuKernels, createReferenceKernels, lrAt, ropeCosSin, ropeInvFreq, shiftLabels,
  type Kernels, type LrScheduleOptions,
} from "../../kernels/index.ts";
import fx from "../fixtures/kernels/kernels.json";
import { expectClose, tensorF, tensorI } from "./helpers.ts";

const backends: [string, Kernels][] = [["fast", createCpuKernels({ threads: 1 })], ["reference", createReferenceKernels()]];
const f32 = (a: number[]) => Float32Array.from(a);

describe.each(backends)("%s backend vs PyTorch", (_name, k) => {
  test("rmsnorm forward/backward", async () => {
    const { N, C, eps } = fx.rmsnorm;
    const x = tensorF(k, [N, C], f32(fx.rmsnorm.x)), w = tensorF(k, [C], f32(fx.rmsnorm.w));
    const y = tensorF(k, [N, C]), rstd = tensorF(k, [N]), dx = tensorF(k, [N, C]), dw = tensorF(k, [C]);
    k.rmsnormForward(y, rstd, x, w, N, C, eps);
    k.rmsnormBackward(dx, dw, tensorF(k, [N, C], f32(fx.rmsnorm.dy)), x, w, rstd, N, C);
    expectClose("y", await k.read(y), fx.rmsnorm.y, 1e-5);
    expectClose("dx", await k.read(dx), fx.rmsnorm.dx, 1e-4, 1e-5);
    expectClose("dw", await k.read(dw), fx.rmsnorm.dw, 1e-4, 1e-5);
  });

  test("rope apply with restarting positions, forward/backward", async () => {
    const { T, NH, HS, theta, positions } = fx.rope_apply;
    const { cos, sin } = ropeCosSin(ropeInvFreq({ dim: HS, theta }), 8);
    const c = tensorF(k, [8, HS / 2], cos), s = tensorF(k, [8, HS / 2], sin), pos = tensorI(k, positions);
    const x = tensorF(k, [T, NH, HS], f32(fx.rope_apply.x)), y = tensorF(k, [T, NH, HS]), dx = tensorF(k, [T, NH, HS]);
    k.ropeForward(y, x, c, s, pos, T, NH, HS);
    k.ropeBackward(dx, tensorF(k, [T, NH, HS], f32(fx.rope_apply.dy)), c, s, pos, T, NH, HS);
    expectClose("y", await k.read(y), fx.rope_apply.y, 1e-5, 1e-6);
    expectClose("dx", await k.read(dx), fx.rope_apply.dx, 1e-5, 1e-6);
  });

  test("varlen causal GQA attention: out, lse, dq, dk, dv", async () => {
    const a = fx.attention, { T, NH, NKV, HS } = a;
    const q = tensorF(k, [T, NH, HS], f32(a.q)), kk = tensorF(k, [T, NKV, HS], f32(a.k)), v = tensorF(k, [T, NKV, HS], f32(a.v));
    const out = tensorF(k, [T, NH, HS]), lse = tensorF(k, [T, NH]), cu = tensorI(k, a.cu);
    const dq = tensorF(k, [T, NH, HS]), dk = tensorF(k, [T, NKV, HS]), dv = tensorF(k, [T, NKV, HS]);
    k.attentionForward(out, lse, q, kk, v, cu, T, NH, NKV, HS, 1 / Math.sqrt(HS), true);
    k.attentionBackward(dq, dk, dv, tensorF(k, [T, NH, HS], f32(a.dout)), q, kk, v, out, lse, cu, T, NH, NKV, HS, 1 / Math.sqrt(HS), true);
    expectClose("out", await k.read(out), a.out, 1e-4, 1e-5);
    expectClose("lse", await k.read(lse), a.lse, 1e-5, 1e-6);
    expectClose("dq", await k.read(dq), a.dq, 1e-4, 1e-5);
    expectClose("dk", await k.read(dk), a.dk, 1e-4, 1e-5);
    expectClose("dv", await k.read(dv), a.dv, 1e-4, 1e-5);
  });

  test("swiglu, linear with bias, embedding", async () => {
    const sw = fx.swiglu;
    const g = tensorF(k, [sw.N], f32(sw.gate)), u = tensorF(k, [sw.N], f32(sw.up)), o = tensorF(k, [sw.N]);
    const dg = tensorF(k, [sw.N]), du = tensorF(k, [sw.N]);
    k.swigluForward(o, g, u, sw.N);
    k.swigluBackward(dg, du, tensorF(k, [sw.N], f32(sw.dout)), g, u, sw.N);
    expectClose("swiglu.out", await k.read(o), sw.out, 1e-5, 1e-6);
    expectClose("swiglu.dgate", await k.read(dg), sw.dgate, 1e-5, 1e-6);
    expectClose("swiglu.dup", await k.read(du), sw.dup, 1e-5, 1e-6);

    const li = fx.linear, { N, C, OC } = li;
    const x = tensorF(k, [N, C], f32(li.x)), w = tensorF(k, [OC, C], f32(li.w)), b = tensorF(k, [OC], f32(li.b)), y = tensorF(k, [N, OC]);
    const dx = tensorF(k, [N, C]), dw = tensorF(k, [OC, C]), db = tensorF(k, [OC]);
    k.linearForward(y, x, w, b, N, C, OC);
    k.linearBackward(dx, dw, db, tensorF(k, [N, OC], f32(li.dout)), x, w, N, C, OC);
    for (const [name, t, want] of [["out", y, li.out], ["dx", dx, li.dx], ["dw", dw, li.dw], ["db", db, li.db]] as const) {
      expectClose(`linear.${name}`, await k.read(t), want, 1e-5, 1e-6);
    }

    const em = fx.embedding;
    const table = tensorF(k, [em.V, em.C], f32(em.table)), eo = tensorF(k, [em.T, em.C]), dt = tensorF(k, [em.V, em.C]), ids = tensorI(k, em.ids);
    k.embeddingForward(eo, ids, table, em.T, em.C, em.V);
    k.embeddingBackward(dt, tensorF(k, [em.T, em.C], f32(em.dout)), ids, em.T, em.C, em.V);
    expect(Array.from(await k.read(eo))).toEqual(Array.from(f32(em.out)));
    expectClose("embedding.dtable", await k.read(dt), em.dtable, 1e-6, 1e-7);
  });

  test("fused LM head cross-entropy: loss sum and scaled grads, labels shifted as HF", async () => {
    const ce = fx.cross_entropy, { T, C, V } = ce;
    const targets = new Int32Array(T);
    shiftLabels(targets, Int32Array.from(ce.labels));
    expect(Array.from(targets)).toEqual(ce.targets);
    const h = tensorF(k, [T, C], f32(ce.hidden)), w = tensorF(k, [V, C], f32(ce.weight));
    const loss = tensorF(k, [1]), dh = tensorF(k, [T, C]), dw = tensorF(k, [V, C]);
    k.crossEntropyFused(loss, dh, dw, h, w, tensorI(k, targets), T, C, V, ce.grad_scale);
    expectClose("loss", await k.read(loss), [ce.loss_sum], 1e-5);
    expectClose("dhidden", await k.read(dh), ce.dhidden, 1e-4, 1e-6);
    expectClose("dweight", await k.read(dw), ce.dweight, 1e-4, 1e-6);
  });

  test("AdamW + clip_grad_norm_ over two buffers, 4 steps", async () => {
    const ad = fx.adamw, n = ad.sizes[0] + ad.sizes[1];
    const flat = tensorF(k, [n], f32(ad.init)), grads = tensorF(k, [n]), m = tensorF(k, [n]), v = tensorF(k, [n]);
    const parts = (t: typeof flat) => [k.view(t, 0, [ad.sizes[0]]), k.view(t, ad.sizes[0], [ad.sizes[1]])];
    const ss = tensorF(k, [1]);
    for (let i = 0; i < ad.steps.length; i++) {
      const st = ad.steps[i];
      k.upload(grads, f32(st.grad));
      k.sumSquares(ss, parts(grads));
      const norm = Math.sqrt((await k.read(ss))[0]);
      expectClose(`step ${i} norm`, [norm], [st.norm], 1e-6);
      const coef = clipCoefficient(norm, ad.max_norm);
      const [pa, pb] = parts(flat), [ga, gb] = parts(grads), [ma, mb] = parts(m), [va, vb] = parts(v);
      const hp = { lr: ad.lr, beta1: ad.beta1, beta2: ad.beta2, eps: ad.eps, weightDecay: ad.weight_decay, step: i + 1, gradScale: coef };
      k.adamw(pa, ga, ma, va, hp);
      k.adamw(pb, gb, mb, vb, hp);
      expectClose(`step ${i} param`, await k.read(flat), st.param, 2e-6, 1e-7);
      expectClose(`step ${i} exp_avg`, await k.read(m), st.m, 1e-5, 1e-8);
      expectClose(`step ${i} exp_avg_sq`, await k.read(v), st.v, 1e-5, 1e-10);
    }
  });
});

describe("host-side tables and schedules vs PyTorch/HF formulas", () => {
  test("rope inv_freq and cos/sin: default and llama3 scaling", () => {
    const rt = fx.rope_tables;
    const maxPos = Math.max(...rt.positions) + 1;
    for (const [name, cfg, scaling] of [
      ["default", rt.default, null],
      ["llama3", rt.llama3, { rope_type: "llama3" as const, factor: rt.llama3.factor, low_freq_factor: rt.llama3.low_freq_factor,
        high_freq_factor: rt.llama3.high_freq_factor, original_max_position_embeddings: rt.llama3.original_max_position_embeddings }],
    ] as const) {
      const inv = ropeInvFreq({ dim: cfg.dim, theta: cfg.theta, scaling });
      expectClose(`${name}.inv_freq`, inv, cfg.inv_freq, 2e-7, 1e-30);
      const { cos, sin } = ropeCosSin(inv, maxPos);
      const h = cfg.dim / 2, gc: number[] = [], gs: number[] = [];
      for (const p of rt.positions) for (let i = 0; i < h; i++) gc.push(cos[p * h + i]), gs.push(sin[p * h + i]);
      // angles up to 3e4 rad: both sides round p*inv_freq to f32 identically, then f32 cos/sin
      expectClose(`${name}.cos`, gc, cfg.cos, 1e-6, 1e-6);
      expectClose(`${name}.sin`, gs, cfg.sin, 1e-6, 1e-6);
    }
  });

  test("LR schedules: constant, linear, cosine with warmup and decay ratio", () => {
    for (const s of fx.lr_schedule) {
      const got = s.lrs.map((_, step) => lrAt(step, s.cfg as LrScheduleOptions));
      expectClose(`lr ${s.cfg.lr_decay_style}/${s.cfg.lr_warmup_ratio}/${s.cfg.lr_decay_ratio}`, got, s.lrs, 1e-12, 1e-18);
    }
  });

  test("clip coefficient as torch.nn.utils.clip_grad_norm_", () => {
    expect(clipCoefficient(4, 1)).toBeCloseTo(1 / (4 + 1e-6), 12);
    expect(clipCoefficient(0.5, 1)).toBe(1);
    expect(clipCoefficient(10, 0)).toBe(1);
  });
});
