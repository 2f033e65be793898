// One-process mixed precision (parallel/mixed_precision.ts) against a plain path of the same
// semantics: before each step every parameter is replaced by its master rounded to bf16 in
// TypeScript (roundBf16), the GEMMs cast their operands per call (no compute copies loaded), and
// the masters are put back after the last backward for clipping and AdamW. 3 AdamW steps of 2
// micro-batches: losses, grad norms and the final parameters bit for bit equal, on a tied and an
// untied dense model, a MoE model (experts units nested in their layers' hooks) and a VL model
// (vision units), with and without activation checkpointing, under both reshard rules
// (train.enable_full_shard true: each copy freed after its use and cast again; false: kept for
// the step), on both bf16 GEMM paths. Also counted: how many copies are alive at once (full
// shard: the units in use, not the model) and that the masters are back after each step.
import { describe, expect, test } from "bun:test";
import { createCpuKernels, roundBf16, type Kernels } from "../../kernels/index.ts";
import { createModel, initWeights, loadPretrained, type DecoderLM } from "../../models/index.ts";
import { Trainer } from "../../actors/trainer.ts";
import { ConfigSchema } from "../../configs/index.ts";
import { parallelize } from "../../parallel/index.ts";
import type { MicroBatch } from "../../data/batch.ts";
import { FIXTURES } from "../models/fixtures.ts";

const T = 24;
const small = { vocab_size: 96, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 };
const MODELS: Record<string, (k: Kernels, ckpt: boolean) => DecoderLM> = {
  "qwen2 tied (fixture: norms and biases off the bf16 grid)": (k, ckpt) => loadPretrained(k, `${FIXTURES}qwen2-mixed`, { maxTokens: T, gradientCheckpointing: ckpt }),
  "llama untied": (k, ckpt) => createModel(k, { model_type: "llama", ...small, tie_word_embeddings: false }, "test", { maxTokens: T, gradientCheckpointing: ckpt }),
  "qwen3_moe": (k, ckpt) => createModel(k, { model_type: "qwen3_moe", ...small, head_dim: 8, num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, decoder_sparse_step: 1, tie_word_embeddings: false }, "test", { maxTokens: T, gradientCheckpointing: ckpt }),
  "qwen2_vl (dummy image)": (k, ckpt) => createModel(k, {
    model_type: "qwen2_vl", ...small, tie_word_embeddings: true, image_token_id: 90, video_token_id: 91, vision_start_token_id: 92, vision_end_token_id: 93, rope_scaling: { type: "mrope", mrope_section: [1, 1, 2] },
    vision_config: { depth: 2, embed_dim: 16, mlp_ratio: 2, num_heads: 2, in_chans: 3, hidden_size: 32, patch_size: 14, spatial_merge_size: 2, temporal_patch_size: 2 },
  }, "test", { maxTokens: T, gradientCheckpointing: ckpt }),
};

/** Two packed rows of random tokens (< 90: no image tokens), two samples each. */
function batches(V: number): MicroBatch[] {
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
  return [0, 1].map(() => {
    const ids = Int32Array.from({ length: T }, () => Math.floor(rnd() * Math.min(V, 90)));
    const cut = 10;
    return {
      inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: T }, (_, i) => (i < cut ? i : i - cut)),
      cuSeqlens: Int32Array.from([0, cut, T]), validTokens: T - 2,
    };
  });
}

interface Run { metrics: { loss: number; grad_norm: number }[]; params: Float32Array[]; casts: number; maxAlive: number; copyBytes: number }

async function train(k: Kernels, make: () => DecoderLM, how: "plan" | "plain", fullShard: boolean): Promise<Run> {
  const model = make();
  if (!model.params[0].host!.some((x) => x !== 0)) initWeights(model, 5);
  const p = k.bf16Params!;
  const saved = { cast: p.cast, load: p.load, release: p.release };
  let casts = 0, alive = 0, maxAlive = 0;
  Object.assign(p, {
    cast: (b: Uint16Array, s: Float32Array) => (casts++, saved.cast(b, s)),
    load: (d: Parameters<typeof p.load>[0], b: Uint16Array) => (maxAlive = Math.max(maxAlive, ++alive), saved.load(d, b)),
    release: (d: Parameters<typeof p.release>[0]) => (alive--, saved.release(d)),
  });
  try {
    const config = ConfigSchema.parse({ train: { enable_full_shard: fullShard } });
    const plan = how === "plan" ? await parallelize({ k, model, config, rank: 0, world: 1, comm: null }) : null;
    // the plain path: every parameter rounded to bf16 for the step, masters back for the optimizer
    let masters: typeof model.params = [];
    const collectives = plan?.collectives ?? {
      allReduceSum: async (x: number) => x,
      syncGrads: async () => masters.forEach((m, u) => (k.free(model.params[u]), (model.params[u] = m))),
    };
    const trainer = new Trainer(model, {
      schedule: { lr: 2e-2, lr_min: 0, lr_start: 0, train_steps: 3, lr_warmup_ratio: 0, lr_decay_style: "constant", lr_decay_ratio: 1 },
      weightDecay: 0.1, maxGradNorm: 0.5, collectives,
    });
    const mbs = batches(model.config.V);
    const metrics = [];
    for (let s = 0; s < 3; s++) {
      const before = [...model.params];
      if (plan) plan.beginStep(mbs.length);
      else {
        masters = [...model.params];
        masters.forEach((m, u) => {
          const r = (model.params[u] = k.alloc([m.numel]));
          for (let i = 0; i < m.numel; i++) r.host![i] = roundBf16(m.host![i]);
        });
      }
      const m = await trainer.step(s, mbs);
      metrics.push({ loss: m.loss, grad_norm: m.grad_norm });
      expect(model.params).toEqual(before); // the masters (updated in place) are back
      expect(alive).toBe(0);
    }
    const copyBytes = plan ? plan.stateBytes() - 16 * model.layout.totalNumel : 0; // past params, grads, AdamW m, v
    return { metrics, params: model.params.map((t) => Float32Array.from(t.host!)), casts, maxAlive, copyBytes };
  } finally {
    Object.assign(p, saved);
  }
}

const bitsEqual = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer).equals(Buffer.from(b.buffer));

describe("one-process mixed precision = rounded masters with per-call casts, bit for bit", () => {
  for (const bf16Gemm of ["emulated", "auto"] as const) {
    for (const [name, make] of Object.entries(MODELS)) {
      test(`${name}, bf16 GEMM ${bf16Gemm}`, async () => {
        const k = createCpuKernels({ threads: 1, mixedPrecision: true, bf16Gemm });
        for (const ckpt of [false, true]) {
          const ref = await train(k, () => make(k, ckpt), "plain", true);
          expect(ref.casts).toBe(0);
          const m = make(k, ckpt);
          const units = m.layout.units.length, H = m.headUnit;
          // full shard, per micro-batch: every unit's forward, the tied embedding again for the
          // head, every backward but the head's (kept from its forward) and the embedding's (no params)
          const perUse = m.forwardUnits.length + (m.layout.units[H].reads.includes(0) ? 1 : 0) + m.backwardUnits.filter((u) => u !== 0 && u !== H).length;
          const total = m.layout.totalNumel;
          const copyBytes: number[] = [];
          for (const fullShard of [true, false]) {
            const got = await train(k, () => make(k, ckpt), "plan", fullShard);
            for (let s = 0; s < 3; s++) {
              expect(got.metrics[s].loss).toBe(ref.metrics[s].loss);
              expect(got.metrics[s].grad_norm).toBe(ref.metrics[s].grad_norm);
            }
            for (let u = 0; u < units; u++) expect(bitsEqual(got.params[u], ref.params[u])).toBe(true);
            copyBytes.push(got.copyBytes);
            if (fullShard) {
              // in use at once: a layer (+ its experts unit) with the head kept for its backward,
              // or the head with the tied embedding; cast again for each use
              expect(got.maxAlive).toBeLessThanOrEqual(3);
              expect(got.casts).toBe(3 * 2 * perUse);
            } else {
              expect(got.maxAlive).toBe(units); // every unit kept for the step, cast once per step
              expect(got.casts).toBe(3 * units);
            }
          }
          // the plan's stateBytes counts the copies' buffers: every unit's (>= 4 bytes per
          // parameter) when kept, less when each is freed after its use
          expect(copyBytes[1]).toBeGreaterThanOrEqual(4 * total);
          expect(copyBytes[0]).toBeLessThan(copyBytes[1]);
        }
      }, 60_000);
    }
  }
});
