// data/: the public surface (see data/README.md). Imports nothing of ours outside data/.
export type { MicroBatch, StepBatch } from "./batch.ts";
export { IGNORE_INDEX } from "./batch.ts";
export { createDataLoader, DataLoader, type DataLoaderConfig, type LoaderOptions, type LoaderInfo, type LoaderLog } from "./loader.ts";
export { reshardStates, type LoaderState } from "./state.ts";
export { loadTokenizer, resolveTokenizer, type TextTokenizer } from "./tokenizer.ts";
export { makeTemplate, type Message, type Segment } from "./templates.ts";
export { packMicroBatch, firstFit, budgetAt } from "./packing.ts";
export { expandTrainPath, splitParagraphs } from "./sources.ts";
export { peekData, type DataPeek } from "./peek.ts";
export { DataLoaderWorker } from "./worker.ts";
export {
  decodeImage, initImageDecoders, imageTokens, loadPreprocessorConfig, parsePreprocessorConfig, patchDim, preprocessImages,
  resizeForModel, smartResize, stackImages, type PreprocessedImages, type PreprocessorConfig, type ResizedImage,
} from "./images/index.ts";
export {
  countPlaceholders, expandImageTokens, IMAGE_PLACEHOLDER, loadVisionOptions, qwen2vlChatPrompt, tokenizeWithImages, type VisionOptions,
} from "./multimodal.ts";
