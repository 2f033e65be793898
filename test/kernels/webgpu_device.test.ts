// WebGPU device selection in real processes: the silent Null-backend trap (Dawn with no usable
// Vulkan driver) must fail `kernels.backend webgpu` loudly and make `auto` choose the CPU; a
// software adapter (lavapipe) is usable when forced but never chosen by `auto`.
import { expect, test } from "bun:test";
import { probeAdapter } from "../../kernels/webgpu/index.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const probe = await probeAdapter();

function runProbe(args: string[], env: Record<string, string> = {}) {
  const p = Bun.spawnSync([process.execPath, `${ROOT}kernels/webgpu/probe_main.ts`, ...args], { cwd: ROOT, env: { ...process.env, ...env } });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

test("no Vulkan driver: Dawn's Null backend is refused; webgpu fails clearly, auto picks cpu", () => {
  const r = runProbe(["--auto", "--open"], { VK_DRIVER_FILES: "/nonexistent/icd.json", VK_ICD_FILENAMES: "/nonexistent/icd.json" });
  expect(r.code).toBe(1);
  expect(r.out).toMatch(/auto -> cpu: auto: no WebGPU adapter \(Dawn returned the Null backend/);
  expect(r.err).toMatch(/kernels.backend webgpu: no WebGPU adapter: Dawn returned the Null backend/);
  expect(r.err).toMatch(/setup_webgpu\.mjs/); // says how to fix it
});

if (!probe.ok) {
  test(`webgpu device: SKIPPED, no adapter: ${probe.reason}`, () => {
    console.warn(`webgpu device: SKIPPED, no adapter: ${probe.reason}`);
  });
} else {
  test("the installed adapter opens with its features logged once; auto follows its kind", () => {
    const r = runProbe(["--auto", "--open"]);
    expect(r.code).toBe(0);
    const want = probe.adapter.isHardware ? "webgpu" : "cpu";
    expect(r.out).toContain(`auto -> ${want}`);
    expect(r.out.match(/features \[/g)?.length).toBe(1);
    expect(r.out).not.toContain("null-backend");
  });
}
