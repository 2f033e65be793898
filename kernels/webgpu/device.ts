/// <reference types="@webgpu/types" />
// WebGPU adapter and device set-up through bun-webgpu (Dawn).
//
// The trap this file exists for: when Dawn finds no usable Vulkan/Metal/D3D driver (Debian 12's
// own Mesa 22.3.6 lavapipe, say) `requestAdapter()` does not fail: it returns the Null backend,
// which claims every feature and computes nothing. We check the backend type and refuse it.
// One device per process, opened once and shared by every WebgpuKernels instance.

import { setupGlobals } from "bun-webgpu";

// Dawn's WGPUBackendType / WGPUAdapterType enum values (webgpu.h), as `adapter.info` reports them.
const BACKEND_NAMES = ["Undefined", "Null", "WebGPU", "D3D11", "D3D12", "Metal", "Vulkan", "OpenGL", "OpenGLES"];
export const BACKEND_NULL = 1;
const ADAPTER_TYPES = ["?", "DiscreteGPU", "IntegratedGPU", "CPU", "Unknown"];

export interface AdapterSummary {
  vendor: string;
  device: string;
  description: string;
  /** "Vulkan", "Metal", ...; never "Null" for an adapter we accept. */
  backend: string;
  backendType: number;
  /** "DiscreteGPU" | "IntegratedGPU" | "CPU" (lavapipe) | "Unknown". */
  adapterType: string;
  /** A hardware GPU (discrete or integrated), as opposed to a software rasteriser. */
  isHardware: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
}

export interface GpuContext {
  device: GPUDevice;
  adapter: AdapterSummary;
  /** Optional features we enabled on the device. */
  f16: boolean;
  subgroups: boolean;
  timestamps: boolean;
  limits: GPUSupportedLimits;
  /** The first uncaptured device error (validation, out of memory) since the last sync point
   *  that looked; device-wide, because every Runtime on this device shares the queue. */
  firstError: string | null;
}

/** `nullBackend`: Dawn answered with its Null backend, i.e. a driver is missing or too old (a
 *  broken install, which tests must report as a failure, not skip). */
export type ProbeResult = { ok: true; adapter: AdapterSummary } | { ok: false; reason: string; nullBackend: boolean };

let globalsReady: Promise<void> | null = null;
let adapterPromise: Promise<{ adapter: GPUAdapter | null; reason: string; nullBackend?: boolean }> | null = null;
let contextPromise: Promise<GpuContext> | null = null;

function summarize(adapter: GPUAdapter): AdapterSummary {
  // bun-webgpu's info object carries Dawn's numeric enums and subgroup sizes beyond the standard fields.
  const info = adapter.info as GPUAdapterInfo & { backendType: number; adapterType: number;
    subgroupMinSize?: number; subgroupMaxSize?: number };
  const adapterType = ADAPTER_TYPES[info.adapterType] ?? `type${info.adapterType}`;
  return {
    vendor: info.vendor,
    device: info.device,
    description: info.description,
    backend: BACKEND_NAMES[info.backendType] ?? `backend${info.backendType}`,
    backendType: info.backendType,
    adapterType,
    isHardware: adapterType === "DiscreteGPU" || adapterType === "IntegratedGPU",
    subgroupMinSize: info.subgroupMinSize ?? 0,
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
  };
}

async function requestRealAdapter(): Promise<{ adapter: GPUAdapter | null; reason: string; nullBackend?: boolean }> {
  globalsReady ??= setupGlobals();
  await globalsReady;
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return { adapter: null, reason: "navigator.gpu.requestAdapter() returned null" };
  const s = summarize(adapter);
  if (s.backendType === BACKEND_NULL) {
    return {
      adapter: null,
      nullBackend: true,
      reason: `Dawn returned the Null backend (device "${s.device}"): no usable GPU driver. On Debian 12 install ` +
        `Mesa >= 24 lavapipe (node tools/setup_webgpu.mjs) or a GPU driver with its Vulkan ICD`,
    };
  }
  return { adapter, reason: "" };
}

/** Looks for a real (non-Null) adapter without opening a device. Never throws. */
export async function probeAdapter(): Promise<ProbeResult> {
  try {
    adapterPromise ??= requestRealAdapter();
    const { adapter, reason, nullBackend } = await adapterPromise;
    return adapter ? { ok: true, adapter: summarize(adapter) } : { ok: false, reason, nullBackend: nullBackend ?? false };
  } catch (e) {
    return { ok: false, reason: `bun-webgpu failed to load: ${(e as Error).message}`, nullBackend: false };
  }
}

/** One line for the startup log. */
export function adapterLine(a: AdapterSummary): string {
  return `webgpu: ${a.backend} ${a.adapterType} "${a.device}" (${a.vendor}; ${a.description})`;
}

/**
 * Opens (once per process) the device with every optional feature the kernels use that the
 * adapter has: shader-f16, subgroups, timestamp-query. Limits: the adapter's own maxima
 * (bun-webgpu throws on a partial requiredLimits, so we pass a full copy). Throws when no real
 * adapter exists: a forced `webgpu` backend must fail clearly, never compute nothing.
 */
export function openGpu(log: (line: string) => void = () => {}): Promise<GpuContext> {
  contextPromise ??= (async () => {
    adapterPromise ??= requestRealAdapter();
    const { adapter, reason } = await adapterPromise;
    if (!adapter) throw new Error(`kernels.backend webgpu: no WebGPU adapter: ${reason}`);
    const want: GPUFeatureName[] = ["shader-f16", "subgroups", "timestamp-query"];
    const features = want.filter((f) => adapter.features.has(f));
    const limits: Record<string, number> = {};
    for (const key in adapter.limits) {
      const v = (adapter.limits as unknown as Record<string, unknown>)[key];
      if (typeof v === "number" && key !== "nextInChain") limits[key] = v;
    }
    const device = await adapter.requestDevice({
      requiredFeatures: features,
      requiredLimits: limits as GPUDeviceDescriptor["requiredLimits"],
    });
    device.lost.then((info) => {
      if (info.reason !== "destroyed") console.error(`webgpu: device lost: ${info.reason} ${info.message}`);
    });
    const summary = summarize(adapter);
    const ctx: GpuContext = {
      device,
      adapter: summary,
      f16: features.includes("shader-f16"),
      subgroups: features.includes("subgroups"),
      timestamps: features.includes("timestamp-query"),
      limits: device.limits,
      firstError: null,
    };
    device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      ctx.firstError ??= ev.error.message;
    };
    log(`${adapterLine(summary)} features [${features.join(", ")}] maxStorageBinding ` +
      `${(device.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB, ` +
      `maxWorkgroupStorage ${device.limits.maxComputeWorkgroupStorageSize} B`);
    return ctx;
  })();
  return contextPromise;
}

/**
 * `kernels.backend` resolution: "cpu" and "webgpu" are taken as asked (webgpu then fails in
 * openGpu if there is no adapter); "auto" picks webgpu only for a hardware GPU. lavapipe is a
 * CPU rasteriser, slower than our CPU backend, so auto never picks it.
 */
export async function resolveBackend(request: "auto" | "cpu" | "webgpu"): Promise<{ backend: "cpu" | "webgpu"; why: string }> {
  if (request !== "auto") return { backend: request, why: `kernels.backend ${request}` };
  const p = await probeAdapter();
  if (!p.ok) return { backend: "cpu", why: `auto: no WebGPU adapter (${p.reason})` };
  if (!p.adapter.isHardware) return { backend: "cpu", why: `auto: WebGPU adapter is software (${p.adapter.device})` };
  return { backend: "webgpu", why: `auto: ${adapterLine(p.adapter)}` };
}
