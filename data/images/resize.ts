// PIL's `Image.resize(size, Image.BICUBIC)` on an 8-bit RGB image, integer for integer
// (Pillow's libImaging/Resample.c): a separable convolution, horizontal pass first into an
// 8-bit intermediate, then vertical. The kernel is Keys' cubic with a = -0.5, support 2; when
// shrinking, the kernel is stretched by the scale (antialiasing: support 2 * in/out). Weights
// are normalised per output pixel in double, then rounded to fixed point with 22 fraction
// bits; each output is (sum + 2^21) >> 22 clipped to [0, 255]. Same size: a copy (as PIL).
// Checked against Pillow-made fixtures in test/data/images.test.ts (exact, tolerance 0).
import type { RgbImage } from "./decode.ts";

const PRECISION_BITS = 32 - 8 - 2;

function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs { ksize: number; bounds: Int32Array; kk: Int32Array }

/** Per output index: first input index, tap count, and ksize fixed-point weights (precompute_coeffs + normalize_coeffs_8bpc). */
function coeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) { w[x] = bicubic((x + xmin - center + 0.5) * ss); ww += w[x]; }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = Math.trunc(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

const clip8 = (ss: number) => { const v = ss >> PRECISION_BITS; return v < 0 ? 0 : v > 255 ? 255 : v; };

/** out (outH, outW, 3) <- img (H, W, 3), PIL bicubic. */
export function resizeBicubic(img: RgbImage, outW: number, outH: number): RgbImage {
  const { width: W, height: H } = img;
  if (W === outW && H === outH) return { width: W, height: H, rgb: img.rgb.slice() };
  const half = 1 << (PRECISION_BITS - 1);
  const cv = coeffs(H, outH);
  let src = img.rgb, srcW = W, rows = H;
  if (W !== outW) {
    // horizontal pass over only the rows the vertical pass will read
    const first = cv.bounds[0];
    const last = cv.bounds[2 * outH - 2] + cv.bounds[2 * outH - 1];
    const ch = coeffs(W, outW);
    rows = H !== outH ? last - first : H;
    const off = H !== outH ? first : 0;
    if (H !== outH) for (let i = 0; i < outH; i++) cv.bounds[2 * i] -= first;
    const tmp = new Uint8Array(rows * outW * 3);
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + off) * W * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = ch.bounds[2 * xx], xmax = ch.bounds[2 * xx + 1], k = xx * ch.ksize;
        let s0 = half, s1 = half, s2 = half;
        for (let x = 0; x < xmax; x++) {
          const wgt = ch.kk[k + x], p = rowIn + (x + xmin) * 3;
          s0 += src[p] * wgt; s1 += src[p + 1] * wgt; s2 += src[p + 2] * wgt;
        }
        const o = (y * outW + xx) * 3;
        tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp; srcW = outW;
  }
  if (H === outH) return { width: outW, height: outH, rgb: src };
  const out = new Uint8Array(outH * srcW * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = cv.bounds[2 * yy], ymax = cv.bounds[2 * yy + 1], k = yy * cv.ksize;
    for (let xx = 0; xx < srcW; xx++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const wgt = cv.kk[k + y], p = ((y + ymin) * srcW + xx) * 3;
        s0 += src[p] * wgt; s1 += src[p + 1] * wgt; s2 += src[p + 2] * wgt;
      }
      const o = (yy * srcW + xx) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return { width: outW, height: outH, rgb: out };
}
