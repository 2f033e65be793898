// Vision-tower parameters under their Hub names (Qwen2-VL-*-Instruct / Qwen2.5-VL safetensors),
// as FSDP units appended after the text units: patch_embed, one unit per block, merger.
import { UnitBuilder, type UnitLayout } from "../layout.ts";
import type { VisionConfig } from "./config.ts";

export function visionUnits(vc: VisionConfig, first: number): UnitLayout[] {
  const units: UnitLayout[] = [];
  const finish = (b: UnitBuilder, name: string) => units.push({ index: b.index, name, numel: b.numel, params: b.params, reads: [] });
  const { D, M } = vc;
  const v25 = vc.kind === "qwen2_5_vl";
  const pe = new UnitBuilder(first);
  // Conv3d weight (D, C_in, t, p, p): as a matrix (D, P) it multiplies one pixel_values row
  pe.add("visual.patch_embed.proj.weight", [D, vc.inChannels, vc.temporalPatchSize, vc.patchSize, vc.patchSize], "normal");
  finish(pe, "visual.patch_embed");
  for (let i = 0; i < vc.depth; i++) {
    const b = new UnitBuilder(first + 1 + i);
    const p = `visual.blocks.${i}.`;
    for (const n of ["norm1", "norm2"]) {
      b.add(`${p}${n}.weight`, [D], "ones");
      if (!v25) b.add(`${p}${n}.bias`, [D], "zeros");
    }
    b.add(`${p}attn.qkv.weight`, [3 * D, D], "normal");
    b.add(`${p}attn.qkv.bias`, [3 * D], "zeros");
    b.add(`${p}attn.proj.weight`, [D, D], "normal");
    b.add(`${p}attn.proj.bias`, [D], "zeros");
    const mlp: [string, number[]][] = v25
      ? [["gate_proj", [M, D]], ["up_proj", [M, D]], ["down_proj", [D, M]]]
      : [["fc1", [M, D]], ["fc2", [D, M]]];
    for (const [n, shape] of mlp) {
      b.add(`${p}mlp.${n}.weight`, shape, "normal");
      b.add(`${p}mlp.${n}.bias`, [shape[0]], "zeros");
    }
    finish(b, `visual.blocks.${i}`);
  }
  const m = new UnitBuilder(first + 1 + vc.depth);
  const H = D * vc.mergeSize * vc.mergeSize;
  m.add("visual.merger.ln_q.weight", [D], "ones");
  if (!v25) m.add("visual.merger.ln_q.bias", [D], "zeros");
  m.add("visual.merger.mlp.0.weight", [H, H], "normal");
  m.add("visual.merger.mlp.0.bias", [H], "zeros");
  m.add("visual.merger.mlp.2.weight", [vc.Cout, H], "normal");
  m.add("visual.merger.mlp.2.bias", [vc.Cout], "zeros");
  finish(m, "visual.merger");
  return units;
}
