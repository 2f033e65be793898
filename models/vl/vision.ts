// The Qwen2-VL / Qwen2.5-VL vision tower (HF Qwen2VisionTransformerPretrainedModel and
// Qwen2_5_VisionTransformerPretrainedModel), explicit autograd, one FSDP unit per module:
//   x = patch_embed(pixels)                       (N,D) <- (N,P) @ Wpe (D,P)^T  (the Conv3d as a GEMM)
//   block i: x += proj(attn(rope2d(qkv(norm1(x)))))   attention within each frame (qwen2_vl, and
//                                                     qwen2_5_vl fullatt blocks) or each window
//            x += mlp(norm2(x))                        fc1-QuickGELU-fc2 | SwiGLU with biases
//   out = merger(x)                               ln_q, view (N/4, 4D), Linear-GELU-Linear -> (N/4, Cout)
// Qwen2.5-VL permutes the merge units into windows first (pixel rows and rotary rows on the host,
// see positions.ts windowIndex) and gathers the merger rows back with the inverse permutation.
// Norms: LayerNorm (qwen2_vl) or RMSNorm (qwen2_5_vl), eps 1e-6. Buffers hold N patches; they grow
// (reallocated once) when a batch brings more patches than any before.
import { sectionedCosSin, ropeInvFreq, type Kernels } from "../../kernels/index.ts";
import type { UnitHooks } from "../decoder.ts";
import type { UnitLayout } from "../layout.ts";
import { Arena, type Buf, type F32, type I32 } from "../blocks/arena.ts";
import type { VisionConfig } from "./config.ts";
import { frameCuSeqlens, patchPositions, windowIndex } from "./positions.ts";

type Views = Map<string, F32>;
const EPS = 1e-6;

interface BlockSaved {
  xn1: Buf; mean1: Buf; rstd1: Buf; q: Buf; k: Buf; v: Buf; att: Buf; lse: Buf;
  xmid: Buf; xn2: Buf; mean2: Buf; rstd2: Buf;
  /** qwen2_vl: h = fc1 out, a = QuickGELU(h); qwen2_5_vl: h = gate, u = up, a = silu(gate) * up. */
  h: Buf; u: Buf | null; a: Buf;
}

interface Buffers {
  cap: number;
  arena: Arena;
  pixels: Buf; cos: Buf; sin: Buf;
  resid: Buf[]; // (depth + 1): input of block i; resid[depth] feeds the merger
  saved: BlockSaved[];
  branch: Buf; dxn: Buf; dres: Buf; datt: Buf; dq: Buf; dk: Buf; dv: Buf; dPre: Buf; dh: Buf; du: Buf | null; da: Buf;
  // merger: xln (N,D) = ln_q(x); hm, gm (N/4, 4D) = pre/post GELU; merged (N/4, Cout)
  xln: Buf; meanq: Buf; rstdq: Buf; hm: Buf; gm: Buf; merged: Buf; dgm: Buf; dhm: Buf; dxln: Buf;
  /** out (N/4, Cout) in image-token order; dout its gradient (filled by the LM). */
  out: Buf; dout: Buf; dmerged: Buf;
  positions: I32; cuFull: I32; cuWin: I32; rev: I32;
}

/** What one forward leaves for backward: patch count and the device index views. */
interface Pending { N: number; cuFull: I32; cuWin: I32; rev: I32 | null; positions: I32 }

export class VisionTower {
  readonly unitIndices: number[];
  private buf: Buffers | null = null;
  private pending: Pending | null = null;
  private invFreq: Float32Array;
  private viewCache = new WeakMap<F32, Views>();

  constructor(private k: Kernels, readonly vc: VisionConfig, private units: UnitLayout[]) {
    this.unitIndices = units.map((u) => u.index);
    // VisionRotaryEmbedding(head_dim / 2): head_dim / 4 frequencies, used for h then for w
    const inv = ropeInvFreq({ dim: vc.HS / 2, theta: 10000 });
    this.invFreq = new Float32Array(vc.HS / 2);
    this.invFreq.set(inv, 0);
    this.invFreq.set(inv, vc.HS / 4);
  }

  /** Bytes of the vision activation buffers currently allocated. */
  get activationBytes(): number {
    return this.buf?.arena.bytes ?? 0;
  }

  private get v25(): boolean {
    return this.vc.kind === "qwen2_5_vl";
  }

  private ensure(N: number): Buffers {
    if (this.buf && this.buf.cap >= N) return this.buf;
    if (this.buf) this.release();
    const { k, vc } = this;
    const { D, M, NH, HS } = vc;
    const unit = vc.mergeSize * vc.mergeSize;
    const a = new Arena(k, N);
    const nb = (w: number, n: string) => a.buf(w, `visual.${n}`);
    const saved: BlockSaved[] = Array.from({ length: vc.depth }, (_, i) => ({
      xn1: nb(D, `${i}.xn1`), mean1: nb(1, `${i}.mean1`), rstd1: nb(1, `${i}.rstd1`),
      q: nb(D, `${i}.q`), k: nb(D, `${i}.k`), v: nb(D, `${i}.v`), att: nb(D, `${i}.att`), lse: nb(NH, `${i}.lse`),
      xmid: nb(D, `${i}.xmid`), xn2: nb(D, `${i}.xn2`), mean2: nb(1, `${i}.mean2`), rstd2: nb(1, `${i}.rstd2`),
      h: nb(M, `${i}.h`), u: this.v25 ? nb(M, `${i}.u`) : null, a: nb(M, `${i}.a`),
    }));
    const perMerged = (w: number, n: string) => nb(Math.ceil(w / unit), n); // (N/4, w) rows in an N-row arena
    this.buf = {
      cap: N, arena: a,
      pixels: nb(vc.P, "pixels"), cos: nb(HS / 2, "cos"), sin: nb(HS / 2, "sin"),
      resid: Array.from({ length: vc.depth + 1 }, (_, i) => nb(D, `resid.${i}`)), saved,
      branch: nb(D, "branch"), dxn: nb(D, "dxn"), dres: nb(D, "dres"), datt: nb(D, "datt"),
      dq: nb(D, "dq"), dk: nb(D, "dk"), dv: nb(D, "dv"), dPre: nb(D, "dpre"),
      dh: nb(M, "dh"), du: this.v25 ? nb(M, "du") : null, da: nb(M, "da"),
      xln: nb(D, "xln"), meanq: nb(1, "meanq"), rstdq: nb(1, "rstdq"), hm: nb(D, "hm"), gm: nb(D, "gm"),
      merged: perMerged(vc.Cout, "merged"), dgm: nb(D, "dgm"), dhm: nb(D, "dhm"), dxln: nb(D, "dxln"),
      out: perMerged(vc.Cout, "out"), dout: perMerged(vc.Cout, "dout"), dmerged: perMerged(vc.Cout, "dmerged"),
      positions: k.alloc([N], "i32", { shared: false, name: "visual.positions" }),
      cuFull: k.alloc([N + 1], "i32", { shared: false, name: "visual.cu_full" }),
      cuWin: k.alloc([N + 1], "i32", { shared: false, name: "visual.cu_window" }),
      rev: k.alloc([Math.max(1, N / unit)], "i32", { shared: false, name: "visual.reverse_index" }),
    };
    k.upload(this.buf.positions, Int32Array.from({ length: N }, (_, i) => i));
    return this.buf;
  }

  private release(): void {
    const b = this.buf!;
    const all: Buf[] = [b.pixels, b.cos, b.sin, ...b.resid, b.branch, b.dxn, b.dres, b.datt, b.dq, b.dk, b.dv, b.dPre, b.dh, b.da,
      b.xln, b.meanq, b.rstdq, b.hm, b.gm, b.merged, b.dgm, b.dhm, b.dxln, b.out, b.dout, b.dmerged];
    if (b.du) all.push(b.du);
    for (const s of b.saved) for (const x of Object.values(s)) if (x) all.push(x as Buf);
    for (const x of all) this.k.free(x.full);
    for (const t of [b.positions, b.cuFull, b.cuWin, b.rev]) this.k.free(t);
    this.buf = null;
  }

  /** Short-name views ("attn.qkv.weight") of unit u's flat buffer (params or grads), cached per buffer. */
  private views(flat: F32, u: number): Views {
    let v = this.viewCache.get(flat);
    if (!v) {
      v = new Map();
      const lu = this.units[u - this.unitIndices[0]];
      const prefix = `${lu.name}.`;
      for (const p of lu.params) v.set(p.name.slice(prefix.length), this.k.view(flat, p.offset, [p.numel]));
      this.viewCache.set(flat, v);
    }
    return v;
  }

  /** Rows [r0, r0 + n) of a (rows, width) buffer view. */
  private rows(t: F32, r0: number, n: number, width: number): F32 {
    return this.k.view(t, r0 * width, [n * width]);
  }

  /**
   * Forward over every vision unit (hooks around each). pixels (N, P) in transformers' patch order,
   * grids (n, 3) [t, h, w]. Returns out (N / merge^2, Cout) in image-token order; keeps what
   * backward needs until the next forward.
   */
  async forward(params: F32[], hooks: UnitHooks, pixels: Float32Array, grids: Int32Array): Promise<F32> {
    const { k, vc } = this;
    const { D, HS, P } = vc;
    const unit = vc.mergeSize * vc.mergeSize;
    const N = pixels.length / P;
    let gN = 0;
    for (let g = 0; g < grids.length; g += 3) {
      const [t, h, w] = [grids[g], grids[g + 1], grids[g + 2]];
      if (t < 1 || h < 1 || w < 1 || h % vc.mergeSize || w % vc.mergeSize) {
        throw new Error(`vision: image_grid_thw row ${g / 3} [${t},${h},${w}] must be positive with h, w multiples of spatial_merge_size ${vc.mergeSize}`);
      }
      gN += t * h * w;
    }
    if (!Number.isInteger(N) || N !== gN) throw new Error(`vision: pixel_values hold ${pixels.length / P} rows of ${P}; image_grid_thw needs ${gN} patches`);
    const b = this.ensure(N);
    const nm = N / unit;
    // host index work: rotary (h, w) ids and attention boundaries; Qwen2.5-VL window permutation
    const pos = patchPositions(grids, vc.mergeSize);
    const cuFull = frameCuSeqlens(grids);
    let px = pixels;
    let cuWin: Int32Array | null = null;
    let rev: Int32Array | null = null;
    if (this.v25) {
      const win = windowIndex(grids, vc);
      cuWin = win.cu;
      px = new Float32Array(pixels.length);
      const ph = new Int32Array(N), pw = new Int32Array(N);
      const r = (rev = new Int32Array(nm));
      win.index.forEach((src, dst) => {
        px.set(pixels.subarray(src * unit * P, (src + 1) * unit * P), dst * unit * P);
        ph.set(pos.h.subarray(src * unit, (src + 1) * unit), dst * unit);
        pw.set(pos.w.subarray(src * unit, (src + 1) * unit), dst * unit);
        r[src] = dst; // argsort(window_index)
      });
      pos.h = ph;
      pos.w = pw;
    }
    const tab = sectionedCosSin(this.invFreq, [pos.h, pos.w], [HS / 4, HS / 4]);
    k.upload(b.pixels.at(N), px);
    k.upload(b.cos.at(N), tab.cos);
    k.upload(b.sin.at(N), tab.sin);
    const cuF = k.view(b.cuFull, 0, [cuFull.length]);
    k.upload(cuF, cuFull);
    let cuW = cuF;
    if (cuWin) {
      cuW = k.view(b.cuWin, 0, [cuWin.length]);
      k.upload(cuW, cuWin);
    }
    let revT: I32 | null = null;
    if (rev) {
      revT = k.view(b.rev, 0, [nm]);
      k.upload(revT, rev);
    }
    const positions = k.view(b.positions, 0, [N]);
    this.pending = { N, cuFull: cuF, cuWin: cuW, rev: revT, positions };

    const [u0] = this.unitIndices;
    await hooks.beforeUnitForward?.(u0);
    k.linearForward(b.resid[0].at(N), b.pixels.at(N), this.views(params[u0], u0).get("proj.weight")!, null, N, P, D);
    await hooks.afterUnitForward?.(u0);
    for (let i = 0; i < vc.depth; i++) {
      const u = u0 + 1 + i;
      await hooks.beforeUnitForward?.(u);
      this.blockForward(i, this.views(params[u], u), N);
      await hooks.afterUnitForward?.(u);
    }
    const um = u0 + 1 + vc.depth;
    await hooks.beforeUnitForward?.(um);
    const w = this.views(params[um], um);
    const x = b.resid[vc.depth].at(N);
    this.norm(b.xln.at(N), b.meanq.at(N), b.rstdq.at(N), x, w, "ln_q", N);
    const H = D * unit;
    k.linearForward(b.hm.at(N), b.xln.at(N), w.get("mlp.0.weight")!, w.get("mlp.0.bias")!, nm, H, H);
    k.geluForward(b.gm.at(N), b.hm.at(N), N * D, "gelu");
    const merged = this.rows(b.merged.full, 0, nm, vc.Cout);
    k.linearForward(merged, b.gm.at(N), w.get("mlp.2.weight")!, w.get("mlp.2.bias")!, nm, H, vc.Cout);
    await hooks.afterUnitForward?.(um);
    if (!revT) return merged;
    const out = this.rows(b.out.full, 0, nm, vc.Cout);
    k.embeddingForward(out, revT, merged, nm, vc.Cout, nm); // out[j] = merged[rev[j]] (a row gather)
    return out;
  }

  /** The (N / merge^2, Cout) buffer the LM writes d(out) into before backward (zeroed here). */
  dOut(): F32 {
    const p = this.pending!;
    const nm = p.N / (this.vc.mergeSize * this.vc.mergeSize);
    const d = this.rows(this.buf!.dout.full, 0, nm, this.vc.Cout);
    this.k.zero(d);
    return d;
  }

  /** Backward of the last forward from dOut(): accumulates every vision unit's grads. */
  async backward(params: F32[], grads: F32[], hooks: UnitHooks): Promise<void> {
    const p = this.pending;
    if (!p) throw new Error("vision: backward() without a preceding forward()");
    const { k, vc } = this;
    const { D, P } = vc;
    const unit = vc.mergeSize * vc.mergeSize;
    const b = this.buf!;
    const N = p.N, nm = N / unit, H = D * unit;
    let dmerged = this.rows(b.dout.full, 0, nm, vc.Cout);
    if (p.rev) {
      dmerged = this.rows(b.dmerged.full, 0, nm, vc.Cout);
      k.zero(dmerged);
      k.embeddingBackward(dmerged, this.rows(b.dout.full, 0, nm, vc.Cout), p.rev, nm, vc.Cout, nm);
    }
    const [u0] = this.unitIndices;
    const um = u0 + 1 + vc.depth;
    await hooks.beforeUnitBackward?.(um);
    const w = this.views(params[um], um), g = this.views(grads[um], um);
    const dgm = b.dgm.at(N), dhm = b.dhm.at(N), dxln = b.dxln.at(N), dres = b.dres.at(N);
    k.zero(dgm);
    k.linearBackward(dgm, g.get("mlp.2.weight")!, g.get("mlp.2.bias")!, dmerged, b.gm.at(N), w.get("mlp.2.weight")!, nm, H, vc.Cout);
    k.zero(dhm);
    k.geluBackward(dhm, dgm, b.hm.at(N), N * D, "gelu");
    k.zero(dxln);
    k.linearBackward(dxln, g.get("mlp.0.weight")!, g.get("mlp.0.bias")!, dhm, b.xln.at(N), w.get("mlp.0.weight")!, nm, H, H);
    k.zero(dres);
    this.normBackward(dres, g, dxln, b.resid[vc.depth].at(N), w, "ln_q", b.meanq.at(N), b.rstdq.at(N), N);
    await hooks.afterUnitBackward?.(um);
    for (let i = vc.depth - 1; i >= 0; i--) {
      const u = u0 + 1 + i;
      await hooks.beforeUnitBackward?.(u);
      this.blockBackward(i, this.views(params[u], u), this.views(grads[u], u), N);
      await hooks.afterUnitBackward?.(u);
    }
    await hooks.beforeUnitBackward?.(u0);
    k.linearBackward(null, this.views(grads[u0], u0).get("proj.weight")!, null, dres, b.pixels.at(N), this.views(params[u0], u0).get("proj.weight")!, N, P, D);
    await hooks.afterUnitBackward?.(u0);
    this.pending = null;
  }

  // ---------------------------------------------------------------- blocks
  /** out, (mean), rstd <- norm `name` of x (N,D): LayerNorm (qwen2_vl) or RMSNorm (qwen2_5_vl). */
  private norm(out: F32, mean: F32, rstd: F32, x: F32, w: Views, name: string, N: number): void {
    if (this.v25) this.k.rmsnormForward(out, rstd, x, w.get(`${name}.weight`)!, N, this.vc.D, EPS);
    else this.k.layernormForward(out, mean, rstd, x, w.get(`${name}.weight`)!, w.get(`${name}.bias`)!, N, this.vc.D, EPS);
  }

  private normBackward(dx: F32, g: Views, dout: F32, x: F32, w: Views, name: string, mean: F32, rstd: F32, N: number): void {
    if (this.v25) this.k.rmsnormBackward(dx, g.get(`${name}.weight`)!, dout, x, w.get(`${name}.weight`)!, rstd, N, this.vc.D);
    else this.k.layernormBackward(dx, g.get(`${name}.weight`)!, g.get(`${name}.bias`)!, dout, x, w.get(`${name}.weight`)!, mean, rstd, N, this.vc.D);
  }

  private qkv(w: Views, part: number, kind: "weight" | "bias"): F32 {
    const D = this.vc.D;
    const full = w.get(`attn.qkv.${kind}`)!;
    return kind === "weight" ? this.k.view(full, part * D * D, [D * D]) : this.k.view(full, part * D, [D]);
  }

  private cuOf(i: number): I32 {
    const p = this.pending!;
    return this.v25 && !this.vc.fullattBlocks.includes(i) ? p.cuWin : p.cuFull;
  }

  private blockForward(i: number, w: Views, N: number): void {
    const { k, vc } = this;
    const { D, NH, HS, M } = vc;
    const b = this.buf!, s = b.saved[i], p = this.pending!;
    const x = b.resid[i].at(N), xn1 = s.xn1.at(N), xmid = s.xmid.at(N), xn2 = s.xn2.at(N), branch = b.branch.at(N);
    const q = s.q.at(N), kk = s.k.at(N), v = s.v.at(N), att = s.att.at(N);
    this.norm(xn1, s.mean1.at(N), s.rstd1.at(N), x, w, "norm1", N);
    k.linearForward(q, xn1, this.qkv(w, 0, "weight"), this.qkv(w, 0, "bias"), N, D, D);
    k.linearForward(kk, xn1, this.qkv(w, 1, "weight"), this.qkv(w, 1, "bias"), N, D, D);
    k.linearForward(v, xn1, this.qkv(w, 2, "weight"), this.qkv(w, 2, "bias"), N, D, D);
    k.ropeForward(q, q, b.cos.at(N), b.sin.at(N), p.positions, N, NH, HS);
    k.ropeForward(kk, kk, b.cos.at(N), b.sin.at(N), p.positions, N, NH, HS);
    k.attentionForward(att, s.lse.at(N), q, kk, v, this.cuOf(i), N, NH, NH, HS, 1 / Math.sqrt(HS), false);
    k.linearForward(branch, att, w.get("attn.proj.weight")!, w.get("attn.proj.bias")!, N, D, D);
    k.add(xmid, x, branch);
    this.norm(xn2, s.mean2.at(N), s.rstd2.at(N), xmid, w, "norm2", N);
    const h = s.h.at(N), a = s.a.at(N);
    if (this.v25) {
      const u = s.u!.at(N);
      k.linearForward(h, xn2, w.get("mlp.gate_proj.weight")!, w.get("mlp.gate_proj.bias")!, N, D, M);
      k.linearForward(u, xn2, w.get("mlp.up_proj.weight")!, w.get("mlp.up_proj.bias")!, N, D, M);
      k.swigluForward(a, h, u, N * M);
      k.linearForward(branch, a, w.get("mlp.down_proj.weight")!, w.get("mlp.down_proj.bias")!, N, M, D);
    } else {
      k.linearForward(h, xn2, w.get("mlp.fc1.weight")!, w.get("mlp.fc1.bias")!, N, D, M);
      k.geluForward(a, h, N * M, "quick_gelu");
      k.linearForward(branch, a, w.get("mlp.fc2.weight")!, w.get("mlp.fc2.bias")!, N, M, D);
    }
    k.add(b.resid[i + 1].at(N), xmid, branch);
  }

  // dres (N,D): in d(block output), out d(block input)
  private blockBackward(i: number, w: Views, g: Views, N: number): void {
    const { k, vc } = this;
    const { D, NH, HS, M } = vc;
    const b = this.buf!, s = b.saved[i], p = this.pending!;
    const dres = b.dres.at(N), dxn = b.dxn.at(N), da = b.da.at(N), dh = b.dh.at(N);
    const xn2 = s.xn2.at(N), a = s.a.at(N), h = s.h.at(N);
    k.zero(da);
    k.zero(dh);
    k.zero(dxn);
    if (this.v25) {
      const du = b.du!.at(N), u = s.u!.at(N);
      k.linearBackward(da, g.get("mlp.down_proj.weight")!, g.get("mlp.down_proj.bias")!, dres, a, w.get("mlp.down_proj.weight")!, N, M, D);
      k.zero(du);
      k.swigluBackward(dh, du, da, h, u, N * M);
      k.linearBackward(dxn, g.get("mlp.gate_proj.weight")!, g.get("mlp.gate_proj.bias")!, dh, xn2, w.get("mlp.gate_proj.weight")!, N, D, M);
      k.linearBackward(dxn, g.get("mlp.up_proj.weight")!, g.get("mlp.up_proj.bias")!, du, xn2, w.get("mlp.up_proj.weight")!, N, D, M);
    } else {
      k.linearBackward(da, g.get("mlp.fc2.weight")!, g.get("mlp.fc2.bias")!, dres, a, w.get("mlp.fc2.weight")!, N, M, D);
      k.geluBackward(dh, da, h, N * M, "quick_gelu");
      k.linearBackward(dxn, g.get("mlp.fc1.weight")!, g.get("mlp.fc1.bias")!, dh, xn2, w.get("mlp.fc1.weight")!, N, D, M);
    }
    this.normBackward(dres, g, dxn, s.xmid.at(N), w, "norm2", s.mean2.at(N), s.rstd2.at(N), N);
    // attention branch: dres now = d(xmid)
    const datt = b.datt.at(N), dq = b.dq.at(N), dk = b.dk.at(N), dv = b.dv.at(N), dPre = b.dPre.at(N), xn1 = s.xn1.at(N);
    k.zero(datt);
    k.linearBackward(datt, g.get("attn.proj.weight")!, g.get("attn.proj.bias")!, dres, s.att.at(N), w.get("attn.proj.weight")!, N, D, D);
    k.zero(dq); k.zero(dk); k.zero(dv);
    k.attentionBackward(dq, dk, dv, datt, s.q.at(N), s.k.at(N), s.v.at(N), s.att.at(N), s.lse.at(N), this.cuOf(i), N, NH, NH, HS,
      1 / Math.sqrt(HS), false);
    k.zero(dxn);
    k.linearBackward(dxn, this.qkv(g, 2, "weight"), this.qkv(g, 2, "bias"), dv, xn1, this.qkv(w, 2, "weight"), N, D, D);
    for (const [part, dRot] of [[0, dq], [1, dk]] as const) {
      k.zero(dPre);
      k.ropeBackward(dPre, dRot, b.cos.at(N), b.sin.at(N), p.positions, N, NH, HS);
      k.linearBackward(dxn, this.qkv(g, part, "weight"), this.qkv(g, part, "bias"), dPre, xn1, this.qkv(w, part, "weight"), N, D, D);
    }
    this.normBackward(dres, g, dxn, b.resid[i].at(N), w, "norm1", s.mean1.at(N), s.rstd1.at(N), N);
  }
}
