// bun run bench images [--reps R] [--rounds N]
// Images/s of our Qwen2-VL image pipeline (data/images: decode + smart_resize + PIL bicubic +
// normalise + patchify) on one thread, beside Pillow + numpy doing the same per image
// (tools/bench/images_ref.py, which also writes the seeded test images: JPEG q90 and PNG).
// The two alternate for N rounds (default 3) and each keeps its best round, so a shared
// machine's load spikes hit both alike. Each case prints both times, the ratio, and whether
// pixel_values are bit-equal (sha256 of the float32 bytes). Last line: one JSON object.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeImage, initImageDecoders, parsePreprocessorConfig, resizeForModel, stackImages } from "../../data/index.ts";

const args = process.argv.slice(2);
const reps = args.includes("--reps") ? Number(args[args.indexOf("--reps") + 1]) : 10;
const rounds = args.includes("--rounds") ? Number(args[args.indexOf("--rounds") + 1]) : 3;
const dir = mkdtempSync(join(tmpdir(), "bench-images-"));
try {
  const python = (mode: string) => {
    const r = Bun.spawnSync(["/usr/bin/python3", join(import.meta.dir, "images_ref.py"), dir, String(reps), mode]);
    if (r.exitCode !== 0) throw new Error(`images_ref.py failed (needs python3-pil, python3-numpy): ${r.stderr.toString().trim()}`);
    return r.stdout.toString();
  };
  python("make");
  await initImageDecoders();
  const pp = parsePreprocessorConfig({}); // transformers' defaults: 56*56 .. 28*28*1280 pixels
  type Ours = { decode: number; resize: number; patchify: number; total: number; patches: number; sha256: string };
  const best = new Map<string, { pil: { ms: number; patches: number; sha256: string }; ours: Ours }>();
  let meta = { pil: "", numpy: "" };
  for (let round = 0; round < rounds; round++) {
    const py = JSON.parse(python("time"));
    meta = { pil: py.pil, numpy: py.numpy };
    for (const c of py.cases as { file: string; ms: number; patches: number; sha256: string }[]) {
      const bytes = new Uint8Array(readFileSync(join(dir, c.file)));
      const run = () => stackImages([resizeForModel(decodeImage(bytes), pp)], pp);
      let out = run();
      const t = { decode: 0, resize: 0, patchify: 0 };
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        const img = decodeImage(bytes);
        const t1 = performance.now();
        const r = resizeForModel(img, pp);
        const t2 = performance.now();
        out = stackImages([r], pp);
        const t3 = performance.now();
        t.decode += t1 - t0; t.resize += t2 - t1; t.patchify += t3 - t2;
      }
      const sha256 = new Bun.CryptoHasher("sha256").update(new Uint8Array(out.pixelValues.buffer)).digest("hex");
      const ours = { decode: t.decode / reps, resize: t.resize / reps, patchify: t.patchify / reps, total: (t.decode + t.resize + t.patchify) / reps, patches: out.pixelValues.length / 1176, sha256 };
      const b = best.get(c.file);
      best.set(c.file, { pil: !b || c.ms < b.pil.ms ? c : b.pil, ours: !b || ours.total < b.ours.total ? ours : b.ours });
    }
  }
  const rows = [];
  for (const [file, { pil, ours }] of best) {
    const f2 = (x: number) => +x.toFixed(2);
    const row = { file, patches: ours.patches, ours_ms: f2(ours.total), decode_ms: f2(ours.decode), resize_ms: f2(ours.resize), patchify_ms: f2(ours.patchify),
      pil_ms: f2(pil.ms), ours_images_s: +(1000 / ours.total).toFixed(1), pil_images_s: +(1000 / pil.ms).toFixed(1), speed_vs_pil: f2(pil.ms / ours.total),
      bit_equal: ours.sha256 === pil.sha256 };
    rows.push(row);
    console.log(`${file.padEnd(13)} ${String(row.patches).padStart(5)} patches  ours ${row.ours_ms} ms (decode ${row.decode_ms}, resize ${row.resize_ms}, patchify ${row.patchify_ms})  PIL+numpy ${row.pil_ms} ms  ours/PIL speed ${row.speed_vs_pil}x  pixel_values bit-equal: ${row.bit_equal}`);
  }
  console.log(JSON.stringify({ reps, rounds, ...meta, cases: rows }));
} finally { rmSync(dir, { recursive: true, force: true }); }
