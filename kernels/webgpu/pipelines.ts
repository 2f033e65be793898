/// <reference types="@webgpu/types" />
// Compute pipelines, created once per (kernel, constants, variant) and cached for the process's
// device. A kernel's bind group layout is read off its WGSL: binding 0 the uniform P struct (with a
// dynamic offset into the runtime's parameter ring), bindings 1..n its tensors, read-only or
// read_write as declared. Compile errors surface through the device's error event at the next
// sync point (runtime.ts), naming the file.
import { readFileSync } from "node:fs";

/** A compute entry point: a .wgsl file beside this one, its entry, pipeline-overridable constants. */
export interface KernelRef {
  file: string;
  entry: string;
  constants?: Record<string, number>;
  /** Source-level variant: replaces `const NAME = ...;` / `alias NAME = ...;` declarations. */
  defines?: Record<string, string>;
  /** Prepended to the source (e.g. "enable f16;"). */
  prelude?: string;
}

export interface Pipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  /** Per tensor binding (1..n): written by the kernel (a promoted read binding is not). */
  writable: boolean[];
  id: number;
}

export class PipelineCache {
  private readonly sources = new Map<string, string>();
  private readonly cache = new Map<string, Pipeline>();

  constructor(private readonly device: GPUDevice) {}

  get size(): number {
    return this.cache.size;
  }

  /**
   * `promote`: bit j set = tensor binding j (0-based) is declared read_write in this variant
   * (runtime.ts resolveAliases: Dawn wants one usage per buffer in a dispatch).
   */
  get(k: KernelRef, promote: number): Pipeline {
    const key = `${k.file}:${k.entry}:${JSON.stringify(k.constants ?? {})}:${JSON.stringify(k.defines ?? {})}:${promote}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    let code = this.sources.get(k.file);
    if (code === undefined) {
      code = readSource(k.file);
      this.sources.set(k.file, code);
    }
    for (const [name, value] of Object.entries(k.defines ?? {})) {
      const re = new RegExp(`^(const|alias) ${name}\\b[^;]*;`, "m");
      if (!re.test(code)) throw new Error(`webgpu ${k.file}: no 'const ${name}' or 'alias ${name}' to define`);
      code = code.replace(re, (_m, kind: string) => `${kind} ${name} = ${value};`);
    }
    if (k.prelude) code = `${k.prelude}\n${code}`;
    if (promote) {
      code = code.replace(/@binding\((\d+)\)\s*var<storage,\s*read>/g, (m, b: string) =>
        (promote >> (Number(b) - 1)) & 1 ? `@binding(${b}) var<storage, read_write>` : m);
    }
    const writable: boolean[] = [];
    const entries: GPUBindGroupLayoutEntry[] = [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform", hasDynamicOffset: true } },
    ];
    for (const m of code.matchAll(/@binding\((\d+)\)\s*var<storage,\s*(read_write|read)>/g)) {
      const b = Number(m[1]);
      if (b !== writable.length + 1) throw new Error(`webgpu ${k.file}: storage bindings must be 1..n in order (found ${b})`);
      writable.push(m[2] === "read_write" && !((promote >> (b - 1)) & 1));
      entries.push({ binding: b, visibility: GPUShaderStage.COMPUTE, buffer: { type: m[2] === "read_write" ? "storage" : "read-only-storage" } });
    }
    const layout = this.device.createBindGroupLayout({ entries });
    const module = this.device.createShaderModule({ code, label: k.file });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: k.entry, constants: k.constants },
      label: `${k.file}:${k.entry}`,
    });
    const p: Pipeline = { pipeline, layout, writable, id: this.cache.size };
    this.cache.set(key, p);
    return p;
  }
}

/**
 * A shader's source with each `#include "other.wgsl"` line replaced by that file (shared helper
 * functions; WGSL has no includes, and a line left unreplaced does not compile). Includes nest;
 * a file including itself is refused.
 */
export function readSource(file: string, seen: string[] = []): string {
  if (seen.includes(file)) throw new Error(`webgpu ${seen[0]}: #include cycle through ${file}`);
  const code = readFileSync(new URL(`./${file}`, import.meta.url), "utf8");
  return code.replace(/^#include "([^"]+)"$/gm, (_m, inc: string) => readSource(inc, [...seen, file]));
}

