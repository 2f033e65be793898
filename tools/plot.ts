// `bun run plot DIR [DIR...] [--out FOLDER]`: loss, lr, grad norm and tokens/s curves of one or
// more runs (their train.output_dir, holding metrics.jsonl) as PNGs, one line per run. Default
// output: DIR/plots for one run, ./plots for several.
import { basename, resolve } from "node:path";
import { readRun, writePlots } from "../actors/plots.ts";

const USAGE = "usage: bun run plot DIR [DIR...] [--out FOLDER]";
const HELP = `${USAGE}

Draws loss.png, lr.png, grad_norm.png and tokens_per_s.png from each DIR/metrics.jsonl (a run's
train.output_dir), one coloured line per run, to compare runs.
  DIR           a run's output folder (several: one line each, named by the folder)
  --out FOLDER  where the PNGs go (default: DIR/plots for one run, ./plots for several)
A training run also writes OUTPUT_DIR/plots/ itself, at the end and at every checkpoint.`;

const argv = process.argv.slice(2);
if (argv.includes("--help") || argv.includes("-h")) {
  console.log(HELP);
  process.exit(0);
}
const dirs: string[] = [];
let out: string | null = null;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--out") out = argv[++i] ?? null;
  else if (argv[i].startsWith("--")) {
    console.error(`plot: unknown option ${argv[i]}\n${USAGE}`);
    process.exit(2);
  } else dirs.push(argv[i]);
}
if (dirs.length === 0 || (argv.includes("--out") && !out)) {
  console.error(`plot: ${dirs.length === 0 ? "give at least one run folder" : "--out needs a folder"}\n${USAGE}`);
  process.exit(2);
}
try {
  // runs named by their folder; the same name twice gets its path instead
  const names = dirs.map((d) => basename(resolve(d)));
  const runs = dirs.map((d, i) => readRun(d, names.indexOf(names[i]) !== i || names.lastIndexOf(names[i]) !== i ? d : names[i]));
  const files = await writePlots(runs, out ?? (dirs.length === 1 ? `${dirs[0]}/plots` : "plots"));
  console.log(files.join("\n"));
} catch (e) {
  console.error(`plot: ${(e as Error).message}`);
  process.exit(1);
}
