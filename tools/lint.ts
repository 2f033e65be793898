// `bun run check` (after tsc): the project's own lint rules, from STYLE.md.
//  1. The import graph: kernels/ and data/ import nothing of ours; mesh/ imports kernels/ only;
//     models/ imports kernels/ (and checkpoint/safetensors for weights); parallel/ (the plans)
//     imports kernels/ mesh/ models/ data/ configs/; only actors/ and tools/
//     import NATS; another folder is imported through its index.ts.
//  2. Bun.env / process.argv are read only in entry points (actors/*_main.ts, tools/) and configs/.
//  3. No focused or skipped tests left behind (test.only / describe.only).
// Prints every violation as file:line: rule, exits 1 if any.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const FOLDERS = ["actors", "kernels", "mesh", "models", "data", "checkpoint", "configs", "parallel", "tools", "test"] as const;
// Which of our folders each folder may import. Tests and tools may import anything.
const ALLOWED: Record<string, string[]> = {
  kernels: [],
  data: [],
  mesh: ["kernels"],
  models: ["kernels", "checkpoint"],
  checkpoint: ["kernels", "configs"],
  configs: [],
  parallel: ["kernels", "mesh", "models", "data", "configs"],
  actors: ["kernels", "mesh", "models", "data", "checkpoint", "configs", "parallel"],
};
const NATS = /^(nats|@nats-io\/)/;

function* files(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name === "fixtures" || name.startsWith(".")) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (p.endsWith(".ts")) yield p;
  }
}

const problems: string[] = [];
for (const folder of FOLDERS) {
  let dirOk = true;
  try { statSync(join(root, folder)); } catch { dirOk = false; }
  if (!dirOk) continue;
  for (const file of files(join(root, folder))) {
    const rel = relative(root, file);
    const text = readFileSync(file, "utf8");
    const lines = text.split("\n");
    const entry = folder === "tools" || folder === "test" || folder === "configs" || /_main\.ts$/.test(file);
    lines.forEach((line, i) => {
      const at = `${rel}:${i + 1}`;
      const m = /^\s*(?:import|export)\s[^'"]*?from\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']|import\(["']([^"']+)["']\)/.exec(line);
      const spec = m ? (m[1] ?? m[2] ?? m[3])! : null;
      if (spec) {
        if (NATS.test(spec) && folder !== "actors" && folder !== "tools" && folder !== "test")
          problems.push(`${at}: only actors/ talks to NATS (imports ${spec})`);
        if (spec.startsWith(".")) {
          const target = relative(root, resolve(dirname(file), spec));
          const top = target.split("/")[0]!;
          if (top !== folder && (FOLDERS as readonly string[]).includes(top)) {
            // Contracts with one idea that other folders share by design may be imported directly.
            const contract = ["data/batch.ts", "data/rng.ts", "checkpoint/safetensors.ts"].includes(target);
            const allowed = ALLOWED[folder];
            if (allowed && !allowed.includes(top) && !contract) problems.push(`${at}: ${folder}/ may not import ${top}/ (${spec})`);
            const inside = target.split("/").slice(1).join("/");
            const viaIndex = inside === "index.ts" || inside === "index" || inside === "";
            if (!viaIndex && !contract && folder !== "test" && folder !== "tools")
              problems.push(`${at}: import ${top}/ through its index.ts, not ${spec}`);
          }
        }
      }
      if (!entry && /\b(Bun\.env|process\.argv)\b/.test(line) && !line.trim().startsWith("//"))
        problems.push(`${at}: read Bun.env/process.argv only in entry points and configs/`);
      if (folder === "test" && /\b(test|it|describe)\.only\(/.test(line)) problems.push(`${at}: focused test left behind`);
    });
  }
}
if (problems.length > 0) {
  console.error(problems.join("\n"));
  console.error(`lint: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log("lint: clean");
