#!/usr/bin/env node
// Installs what VeOmni-TS needs on a fresh Debian machine that has only Node and npm, and
// nothing that is already there. Run by `npm run setup`, and before `npm start` / `npm test`.
//
//   node tools/setup.mjs            apt packages the framework and its tests need + npm deps
//   node tools/setup.mjs --bench    also the reference workloads (PyTorch, iperf3, tcmalloc)
//
// Plain Node (no dependencies): it runs before node_modules exists.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { installWebgpuDeps } from "./setup_webgpu.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bench = process.argv.includes("--bench");

// Debian package -> why we need it.
const APT = {
  "nats-server": "control plane and job state (JetStream KV)",
  "libopenblas0": "CPU GEMM through bun:ffi",
  "fonts-dejavu-core": "text in the loss-curve PNGs (output_dir/plots, bun run plot)",
  "libdnnl2": "oneDNN: bf16 GEMMs (mixed precision) and the f32 GEMM through bun:ffi",
  "gcc": "native element-wise loops (kernels/cpu/native/vec.c, built at first use)",
  "libgomp1": "OpenMP threads of oneDNN and the native loops",
  "iproute2": "ip netns / veth / bridge for the multi-host test (test/dist/netns_multihost.test.ts; skipped without CAP_NET_ADMIN)",
};
const APT_BENCH = {
  "python3-torch": "PyTorch reference workloads in ../shared/bench",
  "python3-numpy": "PyTorch reference workloads",
  "iperf3": "loopback link limit for the comm benchmark",
  "libtcmalloc-minimal4": "tuned PyTorch reference",
};

function installed(pkg) {
  const r = spawnSync("dpkg-query", ["-W", "-f=${Status}", pkg], { encoding: "utf8" });
  return r.status === 0 && r.stdout.includes("install ok installed");
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  if (r.status !== 0) {
    console.error(`setup: '${cmd} ${args.join(" ")}' failed (exit ${r.status})`);
    process.exit(1);
  }
}

const wanted = { ...APT, ...(bench ? APT_BENCH : {}) };
const missing = Object.keys(wanted).filter((p) => !installed(p));
if (missing.length > 0) {
  const asRoot = process.getuid?.() === 0;
  console.log(`setup: installing apt packages: ${missing.map((p) => `${p} (${wanted[p]})`).join(", ")}`);
  const apt = (...a) => (asRoot ? run("apt-get", a) : run("sudo", ["apt-get", ...a]));
  apt("update", "-qq");
  apt("install", "-y", "-qq", "--no-install-recommends", ...missing);
}

// WebGPU on a machine without a GPU runs on Mesa's lavapipe; Debian 12's own Mesa 22 is
// rejected by Dawn (silent Null adapter), so Mesa 25 comes from bookworm-backports.
installWebgpuDeps();

// npm dependencies: install when node_modules is missing or older than the lockfile.
const lock = join(root, "package-lock.json");
const stamp = join(root, "node_modules", ".package-lock.json");
const stale = !existsSync(stamp) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(stamp).mtimeMs);
if (stale) {
  console.log("setup: installing npm dependencies (npm install)");
  run("npm", ["install", "--no-audit", "--no-fund"]);
}

// Bun comes from npm; prove it runs (with --ignore-scripts its binary is a stub that fails).
try {
  execFileSync(join(root, "node_modules", ".bin", "bun"), ["--version"], { stdio: "pipe" });
} catch {
  console.error("setup: node_modules/.bin/bun does not run; reinstall without --ignore-scripts (npm rebuild bun)");
  process.exit(1);
}
