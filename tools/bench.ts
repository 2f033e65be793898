// `bun run bench NAME [args...]`: runs the benchmark tools/bench/NAME.ts with the remaining
// arguments. Each benchmark prints human lines and, last, one JSON object with its figures.
// `bun run bench NAME --help` prints the benchmark's own header comment (its usage) and runs nothing.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [name, ...args] = process.argv.slice(2);
const dir = join(import.meta.dir, "bench");
const available = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".ts")).map((f) => f.slice(0, -3)).sort() : [];
const USAGE = `usage: bun run bench NAME [args...]   (NAME: ${available.join(", ") || "(none yet)"})`;
const wantsHelp = (a: string[]) => a.includes("--help") || a.includes("-h");

if (name === undefined || name === "--help" || name === "-h") {
  const lines = available.map((n) => `  ${n.padEnd(11)} ${headerOf(n).split("\n")[0]}`);
  (name ? console.log : console.error)(`${USAGE}\n\n${lines.join("\n")}\n\nbun run bench NAME --help shows a benchmark's options.`);
  process.exit(name ? 0 : 2);
}
if (!available.includes(name)) {
  console.error(`${USAGE} (got "${name}")`);
  process.exit(2);
}
if (wantsHelp(args)) {
  console.log(`usage: bun run bench ${name} [args...]\n\n${headerOf(name)}`);
  process.exit(0);
}
const proc = Bun.spawn([process.execPath, join(dir, `${name}.ts`), ...args], { stdio: ["inherit", "inherit", "inherit"] });
process.exit(await proc.exited);

/** The leading `//` comment block of tools/bench/NAME.ts, without the slashes. */
function headerOf(n: string): string {
  const out: string[] = [];
  for (const l of readFileSync(join(dir, `${n}.ts`), "utf8").split("\n")) {
    if (!l.startsWith("//")) break;
    out.push(l.replace(/^\/\/ ?/, ""));
  }
  return out.join("\n");
}
