// What this CPU has, read once from /proc/cpuinfo (Linux): the model name for benchmark labels and
// the feature flags that choose kernels (AVX-512, AVX512-BF16, AMX). Elsewhere (no /proc) the
// model is "unknown" and no flag is set, so every choice falls back to the portable path.

import { readFileSync } from "node:fs";

export interface CpuInfo {
  /** "Intel(R) Xeon(R) Platinum 8480+", "AMD EPYC, family 26 model 2" (family and model numbers
   *  added on x86: a virtual machine's name alone may not say which generation runs it). */
  model: string;
  /** Logical CPUs listed. */
  cpus: number;
  /** Every flag of the first processor, as the kernel spells it. */
  flags: string[];
  avx2: boolean;
  avx512f: boolean;
  /** vdpbf16ps / vcvtne2ps2bf16: bf16 dot products on AVX-512 units. */
  avx512bf16: boolean;
  /** AMX tiles with bf16 (Sapphire Rapids and later). */
  amxBf16: boolean;
}

let info: CpuInfo | null = null;

/** Parse /proc/cpuinfo text (exported for tests). */
export function parseCpuInfo(text: string): CpuInfo {
  const name = /^model name\s*:\s*(.+)$/m.exec(text)?.[1]?.trim() ?? "unknown";
  const family = /^cpu family\s*:\s*(\d+)$/m.exec(text)?.[1], num = /^model\s*:\s*(\d+)$/m.exec(text)?.[1];
  const model = family && num ? `${name}, family ${family} model ${num}` : name;
  const cpus = (text.match(/^processor\s*:/gm) ?? []).length;
  const flags = (/^(?:flags|Features)\s*:\s*(.+)$/m.exec(text)?.[1] ?? "").trim().split(/\s+/).filter(Boolean);
  const has = (f: string) => flags.includes(f);
  return { model, cpus, flags, avx2: has("avx2"), avx512f: has("avx512f"), avx512bf16: has("avx512_bf16"), amxBf16: has("amx_bf16") };
}

export function cpuInfo(): CpuInfo {
  if (info) return info;
  let text = "";
  try {
    text = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    // not Linux: no flags, portable paths
  }
  info = parseCpuInfo(text);
  return info;
}

/** One line for logs: model and the flags that matter here. */
export function cpuSummary(c: CpuInfo = cpuInfo()): string {
  const f = [c.avx2 && "avx2", c.avx512f && "avx512f", c.avx512bf16 && "avx512_bf16", c.amxBf16 && "amx_bf16"].filter(Boolean);
  return `${c.model} (${c.cpus} cpus; ${f.length ? f.join(" ") : "no avx2/avx512"})`;
}

/** True where bf16 GEMMs run on bf16 units (AMX or AVX512-BF16), so oneDNN's bf16 GEMM pays. */
export function hasBf16Units(c: CpuInfo = cpuInfo()): boolean {
  return c.amxBf16 || c.avx512bf16;
}
