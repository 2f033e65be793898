// LocalCheckpointing, the world-size-1 path a single-process run uses: model_assets at start,
// saves every save_steps, `auto` resume, save_hf_weights export at the end. A run stopped after
// 3 steps and resumed ends with the same Hugging Face export, byte for byte, as an unbroken run.
import { expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Checkpointable, LocalCheckpointing, listCommitted } from "../../checkpoint/index.ts";
import type { LoaderState } from "../../data/index.ts";
import { type Rank, buffers, makeRanks, raw, run, writeData } from "./dp_local.ts";
import { tempDir } from "../harness/tmp.ts";

setDefaultTimeout(60_000); // real processes and files on a shared 2-core machine

const tmp = tempDir("session");
const STEPS = 6;

function checkpointable(r: Rank): Checkpointable {
  return {
    units: () => buffers(r),
    extraState: () => ({ optimizerSteps: r.trainer.optimizerSteps, loader: r.loader.state() }),
    restore: async (all) => {
      const states = all as { optimizerSteps: number; loader: LoaderState }[];
      r.trainer.optimizerSteps = states[0].optimizerSteps;
      await r.loader.restore(states.map((s) => s.loader));
    },
  };
}

async function session(out: string, data: string, until: number, hf: boolean): Promise<{ start: number; hfDir: string | null }> {
  const [r] = makeRanks(1, STEPS, data);
  const c = checkpointable(r);
  const s = new LocalCheckpointing({
    outputDir: out, save_steps: 2, save_epochs: 0, save_hf_weights: hf, load_checkpoint_path: "auto",
    assets: { dirs: [join(tmp, "model")] }, hfDtype: "F32", // f32: byte equality is exact, no bf16 rounding to hide a difference
  });
  const start = await s.start(c);
  await run([r], start, until, async (done) => { await s.afterStep(done, c); });
  return { start, hfDir: await s.finish(until, c) };
}

test("stop after 3 steps, resume with auto: same final HF export as an unbroken run", async () => {
  mkdirSync(join(tmp, "model"));
  writeFileSync(join(tmp, "model", "config.json"), JSON.stringify(raw));
  writeFileSync(join(tmp, "model", "tokenizer.json"), "{}");
  const data = join(tmp, "data.jsonl");
  await writeData(data);

  const ref = await session(join(tmp, "ref"), data, STEPS, true);
  expect(ref).toEqual({ start: 0, hfDir: join(tmp, "ref", "checkpoints", "global_step_6", "hf_ckpt") });
  expect(readdirSync(ref.hfDir!).sort()).toEqual(["config.json", "model.safetensors", "tokenizer.json"]);

  const out = join(tmp, "job");
  expect((await session(out, data, 3, false)).hfDir).toBeNull();
  expect(listCommitted(join(out, "checkpoints")).map((c) => c.step)).toEqual([2]);
  expect(existsSync(join(out, "model_assets", "config.json"))).toBe(true);
  const resumed = await session(out, data, STEPS, true);
  expect(resumed.start).toBe(2);
  expect(listCommitted(join(out, "checkpoints")).map((c) => c.step)).toEqual([2, 4, 6]);
  expect(readFileSync(join(resumed.hfDir!, "model.safetensors")).equals(readFileSync(join(ref.hfDir!, "model.safetensors")))).toBe(true);
  expect(JSON.parse(readFileSync(join(resumed.hfDir!, "config.json"), "utf8")).torch_dtype).toBe("float32");
});
