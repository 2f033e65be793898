// Prints the WebGPU adapter Dawn gives this process and exits 1 if it is missing or the Null
// backend. Used by tools/setup_webgpu.mjs --verify and by humans: `npx bun kernels/webgpu/probe.ts`.
import { adapterLine, probeAdapter } from "./device.ts";

const r = await probeAdapter();
if (!r.ok) {
  console.error(`webgpu probe: ${r.reason}`);
  process.exit(1);
}
console.log(adapterLine(r.adapter));
process.exit(0);
