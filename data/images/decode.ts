// Image bytes -> 8-bit RGB pixels, as PIL's `Image.open(f).convert("RGB")` gives them (what
// VeOmni's fetch_images feeds to the Hugging Face processor): alpha dropped (not composited),
// grey replicated, palettes expanded, no EXIF rotation, no gamma or ICC conversion.
//   JPEG: @jsquash/jpeg, libjpeg-turbo (mozjpeg) compiled to wasm: the same decoder, IDCT and
//         fancy upsampling as PIL's libjpeg-turbo, so its pixels equal PIL's bit for bit
//         (docs/bench/images.md has the measurement; jpeg-js was off by up to 17 levels).
//   PNG:  pngjs (pure JS, every bit depth, palette and interlace). 16-bit samples keep their
//         high byte, as PIL's "RGB;16B" raw mode does, except 16-bit grey, clipped at 255 as
//         PIL's mode "I" -> "RGB" conversion does.
// Not handled (an error naming the file): CMYK JPEG (PIL converts it; libjpeg's RGBA output
// cannot), formats other than PNG and JPEG.
// Both libraries are loaded, and the wasm compiled, once per thread by `initImageDecoders()`
// (async; text-only runs never load them); decoding itself is synchronous.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { PNG as PngT } from "pngjs";

/** H x W x 3 bytes, row-major, RGB. */
export interface RgbImage { width: number; height: number; rgb: Uint8Array }

interface MozJpeg { decode(data: Uint8Array, preserveOrientation: boolean): { width: number; height: number; data: Uint8ClampedArray } | null }
let jpeg: MozJpeg | null = null;
let png: typeof PngT | null = null;
/** libjpeg's warnings of the current decode (it prints them and goes on; PIL raises on a truncated file). */
let jpegWarnings: string[] = [];
let jpegInit: Promise<void> | null = null;

/** Compiles the JPEG decoder (once per thread). Every entry point that decodes awaits this first. */
export function initImageDecoders(): Promise<void> {
  jpegInit ??= (async () => {
    png = (await import("pngjs")).PNG;
    const mozjpegFactory = (await import("@jsquash/jpeg/codec/dec/mozjpeg_dec.js")).default;
    const req = createRequire(import.meta.url);
    const wasm = await WebAssembly.compile(readFileSync(req.resolve("@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm")));
    jpeg = await (mozjpegFactory as any)({
      noInitialRun: true,
      print: (s: string) => jpegWarnings.push(s),
      printErr: (s: string) => jpegWarnings.push(s),
      instantiateWasm: (imports: Record<string, any>, done: (i: WebAssembly.Instance) => void) => {
        const inst = new WebAssembly.Instance(wasm, imports);
        done(inst);
        return inst.exports;
      },
    });
  })();
  return jpegInit;
}

export type ImageFormat = "png" | "jpeg";

/** The format from the magic bytes, or null. */
export function sniffFormat(b: Uint8Array): ImageFormat | null {
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "png";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  return null;
}

/** Decodes PNG or JPEG bytes; throws a one-line Error saying what is wrong (the caller adds where). */
export function decodeImage(bytes: Uint8Array): RgbImage {
  const fmt = sniffFormat(bytes);
  if (fmt === "jpeg") return decodeJpeg(bytes);
  if (fmt === "png") return decodePng(bytes);
  const head = Array.from(bytes.subarray(0, 4), (x) => x.toString(16).padStart(2, "0")).join(" ");
  throw new Error(`not a PNG or JPEG image (${bytes.length} bytes, starting ${head || "with nothing"})`);
}

function decodeJpeg(bytes: Uint8Array): RgbImage {
  if (!jpeg) throw new Error("JPEG decoder not initialised: await initImageDecoders() first");
  let r: ReturnType<MozJpeg["decode"]>;
  jpegWarnings = [];
  try { r = jpeg.decode(bytes, false); } catch (e) {
    // a fatal libjpeg error ends in exit(1) inside wasm; the module stays usable (tested)
    const why = jpegWarnings.join("; ") || (e as Error).message;
    if (/color conversion/i.test(why)) throw new Error(`CMYK/YCCK JPEG is not supported (${why}); convert it to RGB`);
    throw new Error(`undecodable JPEG (${why})`);
  }
  const why = jpegWarnings.join("; ");
  if (!r || r.width === 0 || r.height === 0) throw new Error(`undecodable JPEG${why ? ` (${why})` : ""}`);
  // a truncated file decodes with grey filler and a warning; PIL refuses it ("image file is truncated")
  if (/premature end/i.test(why)) throw new Error(`undecodable JPEG (truncated: ${why})`);
  return { width: r.width, height: r.height, rgb: dropAlpha(r.data, r.width * r.height) };
}

function decodePng(bytes: Uint8Array): RgbImage {
  // IHDR bit depth is byte 24; 16-bit samples are read raw and cut to their high byte (PIL),
  // lower depths are scaled by pngjs exactly as PIL does (x 255 / (2^d - 1), an integer).
  const deep = bytes.length > 24 && bytes[24] === 16;
  if (!png) throw new Error("PNG decoder not initialised: await initImageDecoders() first");
  let p: { width: number; height: number; data: ArrayLike<number> };
  try {
    p = png.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), { skipRescale: deep } as any);
  } catch (e) { throw new Error(`undecodable PNG (${(e as Error).message})`); }
  const n = p.width * p.height;
  if (n === 0) throw new Error("undecodable PNG (0 pixels)");
  if (!deep) return { width: p.width, height: p.height, rgb: dropAlpha(p.data, n) };
  // PIL: 16-bit colour (and grey+alpha) keeps the high byte; 16-bit grey opens as mode "I" and
  // convert("RGB") clips it at 255
  const greyClip = bytes[25] === 0;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) { const v = p.data[4 * i + c]; rgb[3 * i + c] = greyClip ? Math.min(v, 255) : v >> 8; }
  return { width: p.width, height: p.height, rgb };
}

function dropAlpha(rgba: ArrayLike<number>, n: number): Uint8Array {
  const rgb = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 4) { rgb[3 * i] = rgba[j]; rgb[3 * i + 1] = rgba[j + 1]; rgb[3 * i + 2] = rgba[j + 2]; }
  return rgb;
}
