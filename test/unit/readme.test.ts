// README.md says only what is true of this checkout: no links outside the repository, every
// `bun run NAME` is a package.json script, every benchmark it names exists, and every file or
// folder of the repository it names in backquotes is there.
import { expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "../..");
const readme = readFileSync(join(ROOT, "README.md"), "utf8");

test("README has no links outside the repository; its markdown links name files that exist", () => {
  expect(readme.match(/https?:\/\/\S+|www\.\S+/g) ?? []).toEqual([]);
  for (const [, target] of readme.matchAll(/\]\(([^)]+)\)/g)) expect(existsSync(join(ROOT, target.split("#")[0]))).toBe(true);
});

test("every `bun run NAME` in README is a script, every benchmark named exists", () => {
  const scripts = Object.keys(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).scripts);
  const used = new Set([...readme.matchAll(/\bbun run ([a-z][\w-]*)/g)].map((m) => m[1]));
  expect([...used].filter((n) => !scripts.includes(n))).toEqual([]);
  const benches = readdirSync(join(ROOT, "tools/bench")).filter((f) => f.endsWith(".ts")).map((f) => f.slice(0, -3));
  const listed = /bun run bench ([\w|]+)/.exec(readme)![1].split("|");
  expect(listed.filter((b) => !benches.includes(b))).toEqual([]);
});

test("files and folders of the repository that README names in backquotes exist", () => {
  const named = [...readme.matchAll(/`((?:actors|configs|data|docs|kernels|mesh|models|parallel|checkpoint|tools|test)\/[\w./{},-]*)`/g)].map((m) => m[1]);
  expect(named.length).toBeGreaterThan(5);
  // `configs/pretrain/{qwen2_5,llama3}.yaml` names two files
  const paths = named.flatMap((p) => {
    const b = /\{([^}]+)\}/.exec(p);
    return b ? b[1].split(",").map((x) => p.replace(b[0], x)) : [p];
  });
  expect(paths.filter((p) => !existsSync(join(ROOT, p)))).toEqual([]);
});
