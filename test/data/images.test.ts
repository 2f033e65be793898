// Image preprocessing against Pillow and transformers' Qwen2VLImageProcessor, through fixtures
// made by test/fixtures/make_image_fixtures.py (Debian's PIL 9.4, numpy, torch): decoding equals
// PIL's open().convert("RGB"), the bicubic resize equals PIL's (tolerance 0), and pixel_values
// of an image that needs no resize are bit-equal to the processor's.
import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  decodeImage, initImageDecoders, parsePreprocessorConfig, preprocessImages, resizeForModel, smartResize, stackImages,
} from "../../data/images/index.ts";

const DIR = join(import.meta.dir, "../fixtures/images");
const manifest = JSON.parse(readFileSync(join(DIR, "manifest.json"), "utf8"));
const bytes = (f: string) => new Uint8Array(readFileSync(join(DIR, f)));
const cfgFor = (min: number, max: number) => parsePreprocessorConfig({ min_pixels: min, max_pixels: max });

function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): string | null {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return `at ${i}: ${a[i]} vs ${b[i]}`;
  return null;
}

beforeAll(() => initImageDecoders());

describe("decode (PNG, JPEG) equals PIL's open().convert('RGB')", () => {
  for (const c of manifest.decode as { file: string; width: number; height: number }[]) {
    test(c.file, () => {
      const img = decodeImage(bytes(c.file));
      expect([img.width, img.height]).toEqual([c.width, c.height]);
      expect(firstDiff(img.rgb, bytes(c.file + ".rgb"))).toBeNull();
    });
  }
  test("not an image: one line naming what it got", () => {
    expect(() => decodeImage(new TextEncoder().encode("GIF89a..."))).toThrow(/not a PNG or JPEG image \(9 bytes, starting 47 49 46 38\)/);
    expect(() => decodeImage(bytes("photo420.jpg").subarray(0, 200))).toThrow(/undecodable JPEG \(.*SOS/);
    const jpg = bytes("photo420.jpg");
    expect(() => decodeImage(jpg.subarray(0, jpg.length - 300))).toThrow(/undecodable JPEG \(truncated: Premature end of JPEG file/);
    expect(decodeImage(jpg).width).toBe(60); // the decoder still works after a fatal error
    expect(() => decodeImage(bytes("cmyk.jpg"))).toThrow(/CMYK\/YCCK JPEG is not supported \(Unsupported color conversion request\); convert it to RGB/);
    const png = bytes("rgb.png");
    expect(() => decodeImage(png.subarray(0, 60))).toThrow(/undecodable PNG/);
  });
});

describe("smart_resize (transformers)", () => {
  test("known values, Python's half-to-even round, min/max pixels", () => {
    const F = 28, MIN = 56 * 56, MAX = 28 * 28 * 1280;
    expect(smartResize(56, 84, F, MIN, MAX)).toEqual([56, 84]);
    expect(smartResize(45, 60, F, MIN, MAX)).toEqual([56, 56]);       // 45/28=1.6 -> 2; 60/28=2.14 -> 2
    expect(smartResize(70, 70, F, MIN, MAX)).toEqual([56, 56]);       // 2.5 -> 2 (half to even), not 3
    expect(smartResize(98, 98, F, MIN, MAX)).toEqual([112, 112]);     // 3.5 -> 4
    expect(smartResize(1080, 1920, F, MIN, MAX)).toEqual([728, 1316]); // over max_pixels: scaled down, floored
    expect(smartResize(10, 20, F, MIN, MAX)).toEqual([56, 84]);       // under min_pixels: scaled up, ceiled
    expect(() => smartResize(10, 2100, F, MIN, MAX)).toThrow(/aspect ratio must be smaller than 200/);
  });
  test("preprocessor_config: min/max_pixels over size{}, defaults, bad values named", () => {
    expect(parsePreprocessorConfig({ size: { shortest_edge: 100, longest_edge: 200 } })).toMatchObject({ minPixels: 100, maxPixels: 200 });
    expect(parsePreprocessorConfig({ min_pixels: 3136, max_pixels: 12845056, size: { shortest_edge: 1, longest_edge: 2 } })).toMatchObject({ minPixels: 3136, maxPixels: 12845056 });
    expect(parsePreprocessorConfig({})).toMatchObject({ minPixels: 3136, maxPixels: 1003520, patchSize: 14, mergeSize: 2, temporalPatchSize: 2 });
    expect(() => parsePreprocessorConfig({ image_mean: [1, 2] }, "m/preprocessor_config.json")).toThrow(/m\/preprocessor_config.json: 'image_mean' must be 3 numbers/);
    expect(() => parsePreprocessorConfig({ patch_size: 0 })).toThrow(/'patch_size' must be a positive number/);
    expect(() => parsePreprocessorConfig({ resample: 2 })).toThrow(/'resample' 2 is not implemented; only 3 \(PIL bicubic/);
    expect(parsePreprocessorConfig({ resample: 3, rescale_factor: 0.00392156862745098 }).rescaleFactor).toBe(1 / 255);
  });
});

describe("Qwen2VLImageProcessor", () => {
  for (const c of manifest.process as { file: string; min_pixels: number; max_pixels: number; grid: number[]; resized: number[]; stem: string; sum?: number }[]) {
    test(`${c.file} min ${c.min_pixels} max ${c.max_pixels} -> ${c.resized.join("x")}`, () => {
      const cfg = cfgFor(c.min_pixels, c.max_pixels);
      const r = resizeForModel(decodeImage(bytes(c.file)), cfg);
      expect([r.width, r.height]).toEqual(c.resized);
      expect(r.grid).toEqual(c.grid as [number, number, number]);
      // PIL bicubic, integer for integer (documented tolerance: 0 levels)
      expect(firstDiff(r.rgb, bytes(c.stem + ".resized.rgb"))).toBeNull();
      const out = stackImages([r], cfg);
      expect(Array.from(out.imageGridThw)).toEqual(c.grid);
      expect(out.tokensPerImage).toEqual([(c.grid[0] * c.grid[1] * c.grid[2]) / 4]);
      expect(out.pixelValues.length).toBe(c.grid[0] * c.grid[1] * c.grid[2] * 1176);
      if (c.sum === undefined) {
        const ref = new Float32Array(bytes(c.stem + ".pixel_values.f32").slice().buffer);
        expect(firstDiff(out.pixelValues, ref)).toBeNull(); // bit-equal
      } else {
        let s = 0;
        for (const v of out.pixelValues) s += v;
        expect(Math.abs(s - c.sum)).toBeLessThan(1e-6 * out.pixelValues.length);
      }
    });
  }

  test("a JPEG and a PNG of the same decoded pixels give the same pixel_values", async () => {
    const cfg = cfgFor(3136, 1003520);
    const a = await preprocessImages([bytes("photo420.jpg")], cfg);
    const b = await preprocessImages([join(DIR, "photo420_pixels.png")], cfg);
    expect(firstDiff(a.pixelValues, b.pixelValues)).toBeNull();
    expect(Array.from(a.imageGridThw)).toEqual(Array.from(b.imageGridThw));
  });

  test("several images: concatenated in order, grids per image, errors name the file", async () => {
    const cfg = cfgFor(3136, 1003520);
    const fit = join(DIR, "fit56x84.png");
    const both = await preprocessImages([fit, bytes("photo420.jpg")], cfg);
    expect(Array.from(both.imageGridThw)).toEqual([1, 4, 6, 1, 4, 4]);
    expect(both.tokensPerImage).toEqual([6, 4]);
    const one = await preprocessImages([fit], cfg);
    expect(firstDiff(both.pixelValues.subarray(0, one.pixelValues.length), one.pixelValues)).toBeNull();
    await expect(preprocessImages([join(DIR, "nope.png")], cfg)).rejects.toThrow(/nope.png: .*no such file/i);
    await expect(preprocessImages([new Uint8Array([1, 2, 3])], cfg)).rejects.toThrow(/image 0: not a PNG or JPEG/);
  });
});
