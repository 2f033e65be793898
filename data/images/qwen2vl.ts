// transformers' Qwen2VLImageProcessor (the PIL one; also Qwen2.5-VL's), step for step:
//   RGB uint8 -> smart_resize (h, w multiples of patch*merge = 28, pixels in [min, max]) ->
//   PIL bicubic -> x * rescale_factor (f64, stored f32) -> (x - mean) / std in f32 ->
//   the frame repeated temporal_patch_size (2) times -> patches in merge-window order:
//   pixel_values (grid_t*grid_h*grid_w, C*tp*p*p = 3*2*14*14 = 1176), image_grid_thw (t, h, w).
// An image whose size is already a fitting multiple of 28 is not resampled, so its
// pixel_values equal transformers' bit for bit (test/data/images.test.ts).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decodeImage, initImageDecoders, type RgbImage } from "./decode.ts";
import { resizeBicubic } from "./resize.ts";

/** The preprocessor_config.json fields the processor reads, with transformers' defaults. */
export interface PreprocessorConfig {
  minPixels: number;
  maxPixels: number;
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
  /** (3) per channel */
  imageMean: number[];
  imageStd: number[];
  rescaleFactor: number;
  doResize: boolean;
  doRescale: boolean;
  doNormalize: boolean;
}

const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

/** preprocessor_config.json (parsed) -> PreprocessorConfig. min_pixels/max_pixels win over
 *  size.shortest_edge/longest_edge (transformers' backward compatibility), then the defaults
 *  56*56 and 28*28*1280. `where` names the file in errors. */
export function parsePreprocessorConfig(j: Record<string, any>, where = "preprocessor_config.json"): PreprocessorConfig {
  const num = (k: string, d: number): number => {
    const v = j[k] ?? d;
    if (typeof v !== "number" || !(v > 0)) throw new Error(`${where}: '${k}' must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const size = (j.size ?? {}) as Record<string, unknown>;
  const minPixels = j.min_pixels ?? size.shortest_edge ?? 56 * 56;
  const maxPixels = j.max_pixels ?? size.longest_edge ?? 28 * 28 * 1280;
  const tri = (k: string, d: number[]): number[] => {
    const v = j[k] ?? d;
    const arr = typeof v === "number" ? [v, v, v] : v;
    if (!Array.isArray(arr) || arr.length !== 3 || arr.some((x) => typeof x !== "number")) throw new Error(`${where}: '${k}' must be 3 numbers, got ${JSON.stringify(v)}`);
    return arr;
  };
  const cfg: PreprocessorConfig = {
    minPixels: num("min_pixels", minPixels), maxPixels: num("max_pixels", maxPixels),
    patchSize: num("patch_size", 14), temporalPatchSize: num("temporal_patch_size", 2), mergeSize: num("merge_size", 2),
    imageMean: tri("image_mean", OPENAI_CLIP_MEAN), imageStd: tri("image_std", OPENAI_CLIP_STD),
    rescaleFactor: num("rescale_factor", 1 / 255),
    doResize: j.do_resize ?? true, doRescale: j.do_rescale ?? true, doNormalize: j.do_normalize ?? true,
  };
  // PILImageResampling: 3 = BICUBIC, the processor's default and the only filter implemented here
  if (j.resample != null && j.resample !== 3) throw new Error(`${where}: 'resample' ${JSON.stringify(j.resample)} is not implemented; only 3 (PIL bicubic, Qwen2-VL's) is`);
  if (j.do_convert_rgb === false) throw new Error(`${where}: 'do_convert_rgb' false is not implemented (images are always read as RGB)`);
  if (cfg.minPixels > cfg.maxPixels) throw new Error(`${where}: min_pixels ${cfg.minPixels} > max_pixels ${cfg.maxPixels}`);
  return cfg;
}

/** Reads `<dir>/preprocessor_config.json` (or the file itself). */
export function loadPreprocessorConfig(path: string): PreprocessorConfig {
  const file = existsSync(join(path, "preprocessor_config.json")) ? join(path, "preprocessor_config.json") : path;
  if (!existsSync(file)) throw new Error(`preprocessor config: ${file} does not exist (expected the model's preprocessor_config.json)`);
  let j: unknown;
  try { j = JSON.parse(readFileSync(file, "utf8")); } catch (e) { throw new Error(`${file}: invalid JSON (${(e as Error).message})`); }
  if (!j || typeof j !== "object" || Array.isArray(j)) throw new Error(`${file}: expected a JSON object`);
  return parsePreprocessorConfig(j as Record<string, any>, file);
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** transformers' smart_resize -> [h, w]: multiples of `factor`, aspect kept as well as rounding
 *  allows, h*w within [minPixels, maxPixels]. Aspect ratio > 200: error (as transformers). */
export function smartResize(height: number, width: number, factor: number, minPixels: number, maxPixels: number): [number, number] {
  if (Math.max(height, width) / Math.min(height, width) > 200)
    throw new Error(`absolute aspect ratio must be smaller than 200, got ${Math.max(height, width) / Math.min(height, width)} (${width}x${height})`);
  let h = roundHalfEven(height / factor) * factor;
  let w = roundHalfEven(width / factor) * factor;
  if (h * w > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return [h, w];
}

/** An image after decode + resize, before normalisation (uint8: 1/8 of the float patches, so
 *  samples waiting in the dyn_bsz buffer stay small). grid = [t, h/patch, w/patch]. */
export interface ResizedImage extends RgbImage { grid: [number, number, number] }

/** Decoded RGB -> resized to the processor's grid. */
export function resizeForModel(img: RgbImage, cfg: PreprocessorConfig): ResizedImage {
  const factor = cfg.patchSize * cfg.mergeSize;
  let [h, w] = [img.height, img.width];
  if (cfg.doResize) [h, w] = smartResize(img.height, img.width, factor, cfg.minPixels, cfg.maxPixels);
  if (h % factor !== 0 || w % factor !== 0) throw new Error(`image of ${w}x${h} is not a multiple of ${factor} and do_resize is false`);
  const r = resizeBicubic(img, w, h);
  return { ...r, grid: [1, h / cfg.patchSize, w / cfg.patchSize] };
}

/** Patches of one image, in transformers' order. Rows: for each merge window (row-major over
 *  (h/merge, w/merge)), its merge x merge patches row-major; each row is (c, t, py, px).
 *  out (gt*gh*gw, 3*tp*p*p) written at `out[offset...]`; returns the patch count. */
export function patchify(img: ResizedImage, cfg: PreprocessorConfig, out: Float32Array, offset = 0): number {
  const { patchSize: p, temporalPatchSize: tp, mergeSize: m } = cfg;
  const [, gh, gw] = img.grid;
  const W = img.width;
  // per-channel lookup: uint8 value -> normalised f32, computed exactly as numpy does
  const lut = new Float32Array(3 * 256);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    const mean = f(cfg.imageMean[c]), std = f(cfg.imageStd[c]);
    for (let v = 0; v < 256; v++) {
      let x = cfg.doRescale ? f(v * cfg.rescaleFactor) : v; // astype(f64) * scale -> f32
      if (cfg.doNormalize) x = f(f(x - mean) / std);
      lut[c * 256 + v] = x;
    }
  }
  const rowLen = 3 * tp * p * p;
  let row = offset / rowLen;
  for (let bh = 0; bh < gh / m; bh++) for (let bw = 0; bw < gw / m; bw++)
    for (let mh = 0; mh < m; mh++) for (let mw = 0; mw < m; mw++) {
      const y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;
      const base = row * rowLen;
      for (let c = 0; c < 3; c++) for (let py = 0; py < p; py++) {
        const src = ((y0 + py) * W + x0) * 3 + c;
        for (let px = 0; px < p; px++) {
          const v = lut[c * 256 + img.rgb[src + px * 3]];
          for (let t = 0; t < tp; t++) out[base + ((c * tp + t) * p + py) * p + px] = v;
        }
      }
      row++;
    }
  return gh * gw;
}

/** Tokens one image takes in the text: t*h*w / merge^2. */
export function imageTokens(grid: readonly number[], cfg: PreprocessorConfig): number {
  return (grid[0] * grid[1] * grid[2]) / (cfg.mergeSize * cfg.mergeSize);
}

/** Width of one pixel_values row: 3 * temporal_patch_size * patch_size^2 (1176 for Qwen2-VL). */
export const patchDim = (cfg: PreprocessorConfig) => 3 * cfg.temporalPatchSize * cfg.patchSize * cfg.patchSize;

export interface PreprocessedImages {
  /** (total_patches, patchDim) */
  pixelValues: Float32Array;
  /** (n_images, 3) t, h, w in patches */
  imageGridThw: Int32Array;
  /** (n_images) image_pad tokens each image takes */
  tokensPerImage: number[];
}

/** Resized images -> the processor's batch output (images concatenated in order). */
export function stackImages(imgs: ResizedImage[], cfg: PreprocessorConfig): PreprocessedImages {
  const D = patchDim(cfg);
  let total = 0;
  for (const im of imgs) total += im.grid[0] * im.grid[1] * im.grid[2];
  const pixelValues = new Float32Array(total * D);
  const imageGridThw = new Int32Array(imgs.length * 3);
  let off = 0;
  imgs.forEach((im, i) => {
    off += patchify(im, cfg, pixelValues, off) * D;
    imageGridThw.set(im.grid, i * 3);
  });
  return { pixelValues, imageGridThw, tokensPerImage: imgs.map((im) => imageTokens(im.grid, cfg)) };
}

/** Image files or bytes -> pixel_values + image_grid_thw, as Qwen2VLImageProcessor(images).
 *  For the inference CLI; errors name the file (or "image i" for bytes). */
export async function preprocessImages(inputs: (string | Uint8Array)[], cfg: PreprocessorConfig): Promise<PreprocessedImages> {
  await initImageDecoders();
  return stackImages(inputs.map((x, i) => {
    const name = typeof x === "string" ? x : `image ${i}`;
    try {
      const bytes = typeof x === "string" ? new Uint8Array(readFileSync(x)) : x;
      return resizeForModel(decodeImage(bytes), cfg);
    } catch (e) {
      throw new Error(`${name}: ${(e as Error).message}`);
    }
  }), cfg);
}
