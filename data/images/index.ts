// data/images: image bytes -> Qwen2-VL pixel_values (see data/README.md, "Images").
export { decodeImage, initImageDecoders, sniffFormat, type RgbImage } from "./decode.ts";
export { resizeBicubic } from "./resize.ts";
export {
  imageTokens, loadPreprocessorConfig, parsePreprocessorConfig, patchDim, patchify, preprocessImages, resizeForModel,
  smartResize, stackImages, type PreprocessedImages, type PreprocessorConfig, type ResizedImage,
} from "./qwen2vl.ts";
