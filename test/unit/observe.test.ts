// Seeing a run: TensorBoard event files read back by an independent reader written from the
// format description (test/harness/read_tfevents.py, CRCs checked), the progress line, and the
// loss-curve PNGs of `bun run plot`.
import { expect, test } from "bun:test";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TensorBoardWriter, tfRecord } from "../../actors/tensorboard.ts";
import { clock, progressLine, shownPath } from "../../actors/run_view.ts";
import type { MetricsLine } from "../../actors/metrics.ts";
import { tempDir } from "../harness/tmp.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const READER = join(ROOT, "test/harness/read_tfevents.py");

function readEvents(file: string): Array<{ step?: number; wall_time: number; file_version?: string; scalars: Record<string, number> }> {
  const r = Bun.spawnSync(["python3", READER, file], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`read_tfevents.py: ${r.stderr.toString()}`);
  return r.stdout.toString().trim().split("\n").map((l) => JSON.parse(l));
}

test("TensorBoard event file: the logged scalars read back, CRCs valid", () => {
  const dir = tempDir("tb");
  const w = new TensorBoardWriter(dir, 1_700_000_000_000);
  const logged = [
    { step: 1, loss: 11.5, lr: 0.001 },
    { step: 2, loss: 9.25, lr: 0.002 },
    { step: 300, loss: 0.125, lr: 1e-7 },
  ];
  for (const l of logged) w.scalars(l.step, { "train/loss": l.loss, "train/lr": l.lr, "train/mfu": null, "train/nan": NaN }, 1_700_000_000 + l.step);
  w.close();
  const files = readdirSync(dir);
  expect(files).toHaveLength(1);
  expect(files[0]).toMatch(/^events\.out\.tfevents\.1700000000\./);
  const ev = readEvents(join(dir, files[0]));
  expect(ev[0]).toMatchObject({ file_version: "brain.Event:2", wall_time: 1_700_000_000 });
  expect(ev.slice(1).map((e) => e.step)).toEqual([1, 2, 300]);
  ev.slice(1).forEach((e, i) => {
    expect(e.wall_time).toBe(1_700_000_000 + logged[i].step);
    expect(Object.keys(e.scalars).sort()).toEqual(["train/loss", "train/lr"]); // null and NaN skipped
    expect(e.scalars["train/loss"]).toBe(Math.fround(logged[i].loss));
    expect(e.scalars["train/lr"]).toBe(Math.fround(logged[i].lr));
  });
}, 30_000);

test("a flipped byte fails the reader's CRC check (the check is real)", () => {
  const dir = tempDir("tb");
  const rec = tfRecord(new TextEncoder().encode("hello"));
  rec[13] ^= 1;
  writeFileSync(join(dir, "bad"), rec);
  expect(() => readEvents(join(dir, "bad"))).toThrow(/bad data crc/);
}, 30_000);

const line = (over: Partial<MetricsLine> = {}): MetricsLine => ({
  step: 10, loss: 2.5, grad_norm: 0.75, lr: 1e-3, tokens: 1000, valid_tokens: 990, tokens_per_s: 1234.4, mfu: 0.031, peak_rss_mb: 700, peak_rss_mb_ranks: [700], rss_mb: 512, step_time_s: 1, ...over,
});

test("progress line: step/total, elapsed, ETA, loss, tok/s, MFU, memory", () => {
  // 10 of 40 steps done in 20 s: 30 left at 2 s each
  const s = progressLine(line(), 40, 20, 10);
  expect(s).toBe("step 10/40 25%  0:20 elapsed, eta 1:00  loss 2.5000  lr 1.00e-3  gnorm 0.750  1234 tok/s  mfu 3.1%  mem 512 MB");
  expect(progressLine(line({ mfu: null, rss_mb: undefined }), 40, 20, 10)).toContain("tok/s  mem 700 MB");
  expect(clock(3725)).toBe("1:02:05");
  expect(clock(65)).toBe("1:05");
});

test("bun run plot: one PNG per curve, runs compared on one chart", () => {
  const runs = ["a", "b"].map((n, k) => {
    const d = tempDir(`plot-${n}`);
    const rows = Array.from({ length: 12 }, (_, i) => JSON.stringify({ step: i + 1, loss: 10 / (i + 1 + k), lr: 1e-3, grad_norm: 1, tokens_per_s: 100 + i }));
    writeFileSync(join(d, "metrics.jsonl"), rows.join("\n") + "\n{\"step\": 13, \"lo"); // a partial last line is skipped
    return d;
  });
  const out = tempDir("plot-out");
  const r = Bun.spawnSync([process.execPath, join(ROOT, "tools/plot.ts"), ...runs, "--out", out], { stdout: "pipe", stderr: "pipe" });
  expect(r.stderr.toString()).toBe("");
  expect(r.exitCode).toBe(0);
  expect(readdirSync(out).sort()).toEqual(["grad_norm.png", "loss.png", "lr.png", "tokens_per_s.png"]);
  const png = readFileSync(join(out, "loss.png"));
  expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  // IHDR: 2x zoom of a 640x300 chart plus axes, legend and padding
  const width = png.readUInt32BE(16), height = png.readUInt32BE(20);
  expect(width).toBeGreaterThan(1280);
  expect(height).toBeGreaterThan(600);
  const bad = Bun.spawnSync([process.execPath, join(ROOT, "tools/plot.ts"), join(out, "nope")], { stdout: "pipe", stderr: "pipe" });
  expect(bad.exitCode).toBe(1);
  expect(bad.stderr.toString()).toContain("no metrics.jsonl");
}, 60_000);

test("the summary shows paths inside the working folder relative, others absolute", () => {
  expect(shownPath("output/quickstart/metrics.jsonl", "/repo")).toBe("output/quickstart/metrics.jsonl");
  expect(shownPath("/repo/output/x", "/repo")).toBe("output/x");
  expect(shownPath("/repo", "/repo")).toBe(".");
  expect(shownPath("/tmp/run/metrics.jsonl", "/repo/sub")).toBe("/tmp/run/metrics.jsonl");
  expect(shownPath("../other/x", "/repo/sub")).toBe("/repo/other/x");
  expect(shownPath("/repo/..x/y", "/repo")).toBe("..x/y"); // a folder named ..x is inside
});
