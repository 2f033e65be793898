// Installs a WebGPU-capable Vulkan driver for CI machines without a GPU: Mesa 25 lavapipe
// (software Vulkan) on Debian 12, where the stock Mesa 22.3.6 is rejected by Dawn, which then
// silently hands out a Null adapter that computes nothing (see ../shared/PLATFORM.md).
//
//   import { installWebgpuDeps } from "./setup_webgpu.mjs";
//   installWebgpuDeps();              // idempotent; ~0.1 s when already installed
//   node tools/setup_webgpu.mjs       // same, standalone (add --verify to print the adapter)
//
// On Debian 12 (bookworm) this adds one deb822 source
//   /etc/apt/sources.list.d/bookworm-backports.sources
//     Types: deb / URIs: <the mirror debian.sources already uses> / Suites: bookworm-backports /
//     Components: main / Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
// then `apt-get update` and `apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`
// (pulls mesa-libgallium 25.0.7 and the matching libdrm/libgl/libegl upgrades from backports).
// On newer Debian/Ubuntu the default suite's Mesa is already >= 24 and is installed as is.
// Plain Node, no dependencies: it runs before node_modules exists.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGES = ["mesa-vulkan-drivers", "libvulkan1"];
const MIN_MESA_MAJOR = 24; // Dawn accepts lavapipe from Mesa 24 on; 22.3.6 is rejected
const BACKPORTS_FILE = "/etc/apt/sources.list.d/bookworm-backports.sources";
const LVP_ICD = "/usr/share/vulkan/icd.d/lvp_icd.json";

function sh(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }, ...opts });
}

/** Installed version of a Debian package, or null. */
function dpkgVersion(pkg) {
  const r = sh("dpkg-query", ["-W", "-f=${Status}|${Version}", pkg]);
  if (r.status !== 0 || !r.stdout.startsWith("install ok installed")) return null;
  return r.stdout.split("|")[1] ?? null;
}

function codename() {
  try {
    const m = /^VERSION_CODENAME=(\S+)/m.exec(readFileSync("/etc/os-release", "utf8"));
    return m ? m[1].replace(/"/g, "") : "";
  } catch {
    return "";
  }
}

/** The Debian mirror apt already uses (so offline/proxied CI mirrors keep working). */
function debianMirror() {
  const files = [];
  if (existsSync("/etc/apt/sources.list")) files.push("/etc/apt/sources.list");
  if (existsSync("/etc/apt/sources.list.d")) {
    for (const f of readdirSync("/etc/apt/sources.list.d")) {
      if (f.endsWith(".list") || f.endsWith(".sources")) files.push(join("/etc/apt/sources.list.d", f));
    }
  }
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    const m = /^URIs:\s*(\S+\/debian)\/?\s*$/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\/?\s+bookworm\b/m.exec(text);
    if (m) return m[1];
  }
  return "http://deb.debian.org/debian";
}

function fail(msg) {
  throw new Error(`setup_webgpu: ${msg}`);
}

function apt(args) {
  const asRoot = process.getuid?.() === 0;
  const r = asRoot ? sh("apt-get", args, { stdio: "inherit" }) : sh("sudo", ["-n", "apt-get", ...args], { stdio: "inherit" });
  if (r.status !== 0) fail(`'apt-get ${args.join(" ")}' failed (exit ${r.status}); run as root or with passwordless sudo`);
}

function writeRoot(path, text) {
  if (process.getuid?.() === 0) return writeFileSync(path, text);
  const r = sh("sudo", ["-n", "tee", path], { input: text });
  if (r.status !== 0) fail(`cannot write ${path} (not root, no passwordless sudo)`);
}

/**
 * Makes sure a Mesa >= 24 Vulkan driver (lavapipe) and the Vulkan loader are installed.
 * Returns {changed, mesa} where mesa is the installed mesa-vulkan-drivers version. `force` re-runs
 * the apt steps even when everything is present (to test the fresh-machine path).
 */
export function installWebgpuDeps({ log = console.log, force = false } = {}) {
  const have = dpkgVersion("mesa-vulkan-drivers");
  const major = have ? Number.parseInt(have.split(".")[0].replace(/^\d+:/, ""), 10) : 0;
  if (!force && have && major >= MIN_MESA_MAJOR && dpkgVersion("libvulkan1") && existsSync(LVP_ICD)) {
    return { changed: false, mesa: have };
  }
  if (!existsSync("/usr/bin/apt-get")) fail("apt-get not found: install Mesa >= 24 lavapipe (mesa-vulkan-drivers) by hand");
  const target = [];
  if (codename() === "bookworm") {
    if (!existsSync(BACKPORTS_FILE)) {
      const mirror = debianMirror();
      log(`setup_webgpu: adding bookworm-backports (${mirror}) for Mesa 25 lavapipe`);
      writeRoot(
        BACKPORTS_FILE,
        `Types: deb\nURIs: ${mirror}\nSuites: bookworm-backports\nComponents: main\n` +
          `Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`,
      );
    }
    target.push("-t", "bookworm-backports");
  }
  log(`setup_webgpu: installing ${PACKAGES.join(" ")} ${target.join(" ")} (was mesa-vulkan-drivers ${have ?? "absent"})`);
  apt(["update", "-qq"]);
  apt(["install", "-y", "-qq", "--no-install-recommends", ...target, ...PACKAGES]);
  const now = dpkgVersion("mesa-vulkan-drivers");
  if (!now || Number.parseInt(now, 10) < MIN_MESA_MAJOR) fail(`mesa-vulkan-drivers ${now} installed, need >= ${MIN_MESA_MAJOR}`);
  if (!existsSync(LVP_ICD)) fail(`${LVP_ICD} missing after installing mesa-vulkan-drivers ${now}`);
  return { changed: true, mesa: now };
}

/** Spawns Bun on the adapter probe; throws unless Dawn gives a real (non-Null) adapter. */
export function verifyWebgpuAdapter(root) {
  const bun = join(root, "node_modules", ".bin", "bun");
  const r = sh(bun, [join(root, "kernels", "webgpu", "probe_main.ts")], { cwd: root });
  if (r.status !== 0) fail(`adapter probe failed: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout.trim();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const res = installWebgpuDeps();
  console.log(`setup_webgpu: mesa-vulkan-drivers ${res.mesa}${res.changed ? " (installed)" : " (already present)"}`);
  if (process.argv.includes("--verify")) console.log(verifyWebgpuAdapter(join(dirname(fileURLToPath(import.meta.url)), "..")));
}
