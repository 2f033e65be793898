// Training curves as PNG: loss, lr, grad norm and tokens/s against the step, one line per run.
// Drawn with Vega (a declarative chart spec rendered to SVG without a browser or canvas) and
// rasterised by resvg (Rust, prebuilt in its npm package): both install from npm alone. Text uses
// the system's DejaVu Sans (apt fonts-dejavu-core, installed by tools/setup.mjs).
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";

/** The metrics.jsonl fields plotted, each to <name>.png. */
export const PLOTTED = [
  { field: "loss", title: "loss", file: "loss.png", log: false },
  { field: "lr", title: "learning rate", file: "lr.png", log: false },
  { field: "grad_norm", title: "grad norm", file: "grad_norm.png", log: false },
  { field: "tokens_per_s", title: "tokens/s", file: "tokens_per_s.png", log: false },
] as const;

export interface Run {
  name: string;
  /** metrics.jsonl lines (step and the plotted fields). */
  rows: Array<Record<string, unknown>>;
}

/** A run's metrics.jsonl (lines that do not parse are skipped: a line being written). */
export function readRun(dir: string, name = basename(resolve(dir))): Run {
  const rows: Array<Record<string, unknown>> = [];
  let text: string;
  try {
    text = readFileSync(join(dir, "metrics.jsonl"), "utf8");
  } catch (e) {
    throw new Error(`${dir}: no metrics.jsonl (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): is it a run's train.output_dir?`);
  }
  for (const l of text.split("\n")) {
    if (!l.trim()) continue;
    try {
      rows.push(JSON.parse(l));
    } catch {
      continue; // a partial last line
    }
  }
  return { name, rows };
}

/** The Vega spec of one chart: `field` against step, one coloured line per run. */
function spec(runs: Run[], field: string, title: string): object {
  const values = runs.flatMap((r) =>
    r.rows.filter((x) => typeof x.step === "number" && typeof x[field] === "number" && Number.isFinite(x[field] as number)).map((x) => ({ run: r.name, step: x.step, y: x[field] })),
  );
  return {
    $schema: "https://vega.github.io/schema/vega/v5.json",
    width: 640, height: 300, padding: 8, background: "white",
    title: { text: title, anchor: "start", fontSize: 14 },
    data: [{ name: "t", values }],
    scales: [
      { name: "x", type: "linear", domain: { data: "t", field: "step" }, range: "width", nice: false, zero: false },
      { name: "y", type: "linear", domain: { data: "t", field: "y" }, range: "height", nice: true, zero: false },
      { name: "color", type: "ordinal", domain: { data: "t", field: "run" }, range: "category" },
    ],
    axes: [
      { orient: "bottom", scale: "x", title: "step", grid: true, gridOpacity: 0.3, tickMinStep: 1 },
      { orient: "left", scale: "y", title, grid: true, gridOpacity: 0.3 },
    ],
    legends: runs.length > 1 ? [{ stroke: "color", title: "run", orient: "top-right" }] : [],
    marks: [{
      type: "group",
      from: { facet: { name: "series", data: "t", groupby: "run" } },
      marks: [{
        type: "line", from: { data: "series" },
        encode: { enter: { x: { scale: "x", field: "step" }, y: { scale: "y", field: "y" }, stroke: { scale: "color", field: "run" }, strokeWidth: { value: 1.6 } } },
      }],
    }],
  };
}

/** Renders every plotted field of `runs` to outDir/<field>.png; returns the files written. */
export async function writePlots(runs: Run[], outDir: string): Promise<string[]> {
  // loaded on first use: the coordinator pays for them only when it draws
  const vega = await import("vega");
  const { Resvg } = await import("@resvg/resvg-js");
  mkdirSync(outDir, { recursive: true });
  const files: string[] = [];
  for (const p of PLOTTED) {
    if (!runs.some((r) => r.rows.some((x) => typeof x[p.field] === "number"))) continue;
    const view = new vega.View(vega.parse(spec(runs, p.field, p.title) as never), { renderer: "none" });
    const svg = await view.toSVG();
    view.finalize();
    const png = new Resvg(svg, { fitTo: { mode: "zoom", value: 2 }, font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" } }).render().asPng();
    const path = join(outDir, p.file);
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, png);
    renameSync(tmp, path); // a viewer never sees half a PNG
    files.push(path);
  }
  return files;
}
