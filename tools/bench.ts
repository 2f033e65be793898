// `bun run bench NAME [args...]`: runs the benchmark tools/bench/NAME.ts with the remaining
// arguments. Each benchmark prints human lines and, last, one JSON object with its figures.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

const [name, ...args] = process.argv.slice(2);
const dir = join(import.meta.dir, "bench");
const available = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".ts")).map((f) => f.slice(0, -3)).sort() : [];
if (!name || !available.includes(name)) {
  console.error(`usage: bun run bench NAME [args...]; NAME is one of: ${available.join(", ") || "(none yet)"}${name ? ` (got "${name}")` : ""}`);
  process.exit(2);
}
const proc = Bun.spawn([process.execPath, join(dir, `${name}.ts`), ...args], { stdio: ["inherit", "inherit", "inherit"] });
process.exit(await proc.exited);
