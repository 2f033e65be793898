// Host-side index arithmetic of Qwen2-VL / Qwen2.5-VL, as transformers computes it:
//  - ropeIndex: the (temporal, height, width) M-RoPE position ids of one sample (get_rope_index);
//    packedRopeIndex runs it per packed sample (VeOmni computes them per sample before packing).
//  - patchPositions: the (h, w) ids of every patch in merge-window order (rot_pos_emb).
//  - frameCuSeqlens: attention boundaries of the vision tower, one per image frame.
//  - windowIndex: Qwen2.5-VL's merge-unit permutation into windows and their boundaries.
// grids are (n, 3) rows [t, h, w] in patches, in the order the images appear.
import type { VisionConfig, MultimodalIds } from "./config.ts";

export interface Pos3 { t: Int32Array; h: Int32Array; w: Int32Array }

/** HF get_rope_index for ONE sample. Consumes grids from `grids` starting at row `g0`; returns the
 *  positions and how many images the sample held. Images: Qwen2-VL t index = frame; Qwen2.5-VL
 *  0 (second_per_grid_t = 0 for images). */
export function ropeIndex(ids: Int32Array, grids: Int32Array, g0: number, vc: VisionConfig, mm: MultimodalIds): { pos: Pos3; images: number } {
  const T = ids.length;
  const pos: Pos3 = { t: new Int32Array(T), h: new Int32Array(T), w: new Int32Array(T) };
  let nImg = 0; // images = vision_start tokens followed by an image token
  for (let i = 0; i + 1 < T; i++) if (ids[i] === mm.visionStartTokenId && ids[i + 1] === mm.imageTokenId) nImg++;
  let st = 0, next = 0, g = g0; // next = st_idx of the following text run
  const ms = vc.mergeSize;
  for (let n = 0; n < nImg; n++) {
    let ed = st;
    while (ed < T && ids[ed] !== mm.imageTokenId) ed++;
    if (g >= grids.length / 3) throw new Error(`image_grid_thw has ${grids.length / 3} rows; the input ids hold more images`);
    const lt = grids[3 * g], lh = grids[3 * g + 1] / ms, lw = grids[3 * g + 2] / ms;
    g++;
    for (let i = st; i < ed; i++) pos.t[i] = pos.h[i] = pos.w[i] = next + i - st;
    const base = next + ed - st;
    let mx = base - 1;
    let i = ed;
    for (let a = 0; a < lt; a++) {
      for (let b = 0; b < lh; b++) {
        for (let c = 0; c < lw; c++, i++) {
          if (i >= T) throw new Error(`an image of grid [${lt},${lh * ms},${lw * ms}] needs ${lt * lh * lw} image tokens; the sample ends first`);
          pos.t[i] = base + (vc.kind === "qwen2_5_vl" ? 0 : a);
          pos.h[i] = base + b;
          pos.w[i] = base + c;
          mx = Math.max(mx, pos.t[i], pos.h[i], pos.w[i]);
        }
      }
    }
    next = mx + 1;
    st = ed + lt * lh * lw;
  }
  for (let i = st; i < T; i++) pos.t[i] = pos.h[i] = pos.w[i] = next + i - st;
  return { pos, images: g - g0 };
}

/** ropeIndex per sample of a packed row (cuSeqlens), images consumed in order; all must be used. */
export function packedRopeIndex(ids: Int32Array, cuSeqlens: Int32Array, grids: Int32Array | null, vc: VisionConfig, mm: MultimodalIds): Pos3 {
  const T = ids.length;
  const out: Pos3 = { t: new Int32Array(T), h: new Int32Array(T), w: new Int32Array(T) };
  const gr = grids ?? new Int32Array(0);
  let g = 0;
  for (let s = 0; s + 1 < cuSeqlens.length; s++) {
    const a = cuSeqlens[s], b = cuSeqlens[s + 1];
    const { pos, images } = ropeIndex(ids.subarray(a, b), gr, g, vc, mm);
    out.t.set(pos.t, a);
    out.h.set(pos.h, a);
    out.w.set(pos.w, a);
    g += images;
  }
  if (g !== gr.length / 3) throw new Error(`image_grid_thw has ${gr.length / 3} rows but the input ids hold ${g} images (<|vision_start|><|image_pad|>)`);
  return out;
}

/** (h, w) ids of every patch, merge-window order (HF rot_pos_emb), frames repeated. */
export function patchPositions(grids: Int32Array, ms: number): { h: Int32Array; w: Int32Array } {
  let N = 0;
  for (let g = 0; g < grids.length; g += 3) N += grids[g] * grids[g + 1] * grids[g + 2];
  const h = new Int32Array(N), w = new Int32Array(N);
  let i = 0;
  for (let g = 0; g < grids.length; g += 3) {
    const [t, H, W] = [grids[g], grids[g + 1], grids[g + 2]];
    for (let f = 0; f < t; f++) {
      for (let bh = 0; bh < H / ms; bh++) {
        for (let bw = 0; bw < W / ms; bw++) {
          for (let ih = 0; ih < ms; ih++) {
            for (let iw = 0; iw < ms; iw++, i++) {
              h[i] = bh * ms + ih;
              w[i] = bw * ms + iw;
            }
          }
        }
      }
    }
  }
  return { h, w };
}

/** Vision attention boundaries: one sample per frame (h * w patches each), (frames + 1). */
export function frameCuSeqlens(grids: Int32Array): Int32Array {
  const cu = [0];
  for (let g = 0; g < grids.length; g += 3) for (let f = 0; f < grids[g]; f++) cu.push(cu[cu.length - 1] + grids[g + 1] * grids[g + 2]);
  return Int32Array.from(cu);
}

/** Qwen2.5-VL get_window_index: `index` (N / merge^2) lists merge units in window order (frame by
 *  frame, windows of vws x vws units row-major, units row-major inside); `cu` the window boundaries
 *  in patches, consecutive duplicates removed (HF pads a whole empty window when a side divides). */
export function windowIndex(grids: Int32Array, vc: VisionConfig): { index: Int32Array; cu: Int32Array } {
  const ms = vc.mergeSize, unit = ms * ms;
  const vws = vc.windowSize / ms / vc.patchSize;
  const index: number[] = [];
  const cu = [0];
  let base = 0;
  for (let g = 0; g < grids.length; g += 3) {
    const t = grids[g], lh = grids[g + 1] / ms, lw = grids[g + 2] / ms;
    const nh = Math.ceil((lh + 1) / vws), nw = Math.ceil((lw + 1) / vws); // (l + vws - l % vws) / vws
    for (let f = 0; f < t; f++) {
      for (let wh = 0; wh < nh; wh++) {
        for (let ww = 0; ww < nw; ww++) {
          let n = 0;
          for (let a = wh * vws; a < Math.min((wh + 1) * vws, lh); a++) {
            for (let b = ww * vws; b < Math.min((ww + 1) * vws, lw); b++, n++) index.push(base + (f * lh + a) * lw + b);
          }
          if (n > 0) cu.push(cu[cu.length - 1] + n * unit);
        }
      }
    }
    base += t * lh * lw;
  }
  return { index: Int32Array.from(index), cu: Int32Array.from(cu) };
}
