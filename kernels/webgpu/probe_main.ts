// Prints the WebGPU adapter Dawn gives this process and exits 1 if it is missing or the Null
// backend. Used by tools/setup_webgpu.mjs --verify, test/kernels/webgpu_device.test.ts and humans:
//   npx bun kernels/webgpu/probe_main.ts            the adapter line
//   npx bun kernels/webgpu/probe_main.ts --auto     also what `kernels.backend auto` resolves to, and why
//   npx bun kernels/webgpu/probe_main.ts --open     also open the device (as `kernels.backend webgpu` does)
import { adapterLine, openGpu, probeAdapter, resolveBackend } from "./device.ts";

const args = process.argv.slice(2);
if (args.includes("--auto")) {
  const r = await resolveBackend("auto");
  console.log(`auto -> ${r.backend}: ${r.why}`);
}
if (args.includes("--open")) {
  try {
    await openGpu((line) => console.log(line));
  } catch (e) {
    console.error((e as Error).message);
    process.exit(1);
  }
}
const r = await probeAdapter();
if (!r.ok) {
  console.error(`webgpu probe: ${r.reason}`);
  process.exit(1);
}
console.log(adapterLine(r.adapter));
process.exit(0);
