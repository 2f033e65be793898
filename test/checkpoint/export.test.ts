// A checkpoint saved from a real model on 3 uneven FSDP ranks, merged to a Hugging Face folder,
// loads back through models/ (as `bun run infer` does) with bitwise identical logits; bf16
// export stays within bf16 rounding.
import { expect, test, setDefaultTimeout } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { checkpointDir, evenShard, mergeToHf, stateShapes, statePieces, writeModelAssets } from "../../checkpoint/index.ts";
import { createCpuKernels } from "../../kernels/index.ts";
import { createModel, initWeights, loadPretrained } from "../../models/index.ts";
import { saveAll } from "./helpers.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const tmp = tempDir("export");

test("save on 3 FSDP ranks -> merge -> load: identical logits", async () => {
  const k = createCpuKernels({ threads: 1 });
  const raw = { model_type: "llama", vocab_size: 101, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: false };
  const model = createModel(k, raw, "export test", { maxTokens: 16, gradientCheckpointing: false });
  initWeights(model, 17);
  const world = 3;
  const perRank = [...Array(world).keys()].map((rank) => statePieces(model.layout.units.map((u) => {
    const { start, size } = evenShard(u.numel, world, rank);
    return { params: u.params, start, model: model.params[u.index].host!.slice(start, start + size), expAvg: new Float32Array(size), expAvgSq: new Float32Array(size) };
  })));
  expect(perRank[2].length).toBeGreaterThan(0);
  const out = join(tmp, "out");
  const src = join(tmp, "src");
  mkdirSync(src);
  writeFileSync(join(src, "config.json"), JSON.stringify(raw));
  writeModelAssets(out, { dirs: [src] });
  const dir = checkpointDir(out, 7);
  const meta = await saveAll(dir, 7, perRank);
  expect(new Map(Object.entries(meta.tensors).map(([n, t]) => [n, t.shape]))).toEqual(stateShapes(model.layout.units));

  const ids = Int32Array.from({ length: 16 }, (_, i) => (i * 13) % 101);
  const mb = { inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: 16 }, (_, i) => (i < 9 ? i : i - 9)), cuSeqlens: Int32Array.from([0, 9, 16]), validTokens: 14 };
  const want = await model.logits(mb);
  for (const [dtype, tol] of [["F32", 0], ["BF16", 2e-2]] as const) {
    const save = join(dir, `hf_${dtype}`);
    mergeToHf({ loadDir: dir, modelAssetsDir: join(out, "model_assets"), saveDir: save, shardBytes: 4000, dtype });
    const back = loadPretrained(k, save, { maxTokens: 16, gradientCheckpointing: false });
    const got = await back.logits(mb);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    if (tol === 0) expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true);
    else expect(worst).toBeGreaterThan(0); // really rounded to bf16
    expect(worst).toBeLessThanOrEqual(tol);
  }
});
