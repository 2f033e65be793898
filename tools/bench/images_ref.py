# Reference for `bun run bench images`: writes the benchmark images (seeded synthetic photos,
# JPEG q90 4:2:0 and PNG) into DIR, then times Pillow + numpy doing what transformers'
# Qwen2VLImageProcessor does per image (open().convert("RGB"), smart_resize, PIL bicubic,
# rescale, normalize, repeat, reshape/permute), one thread. Prints one JSON object.
# usage: /usr/bin/python3 tools/bench/images_ref.py DIR REPS make|time
import hashlib, io, json, math, os, sys, time
import numpy as np
from PIL import Image

out, reps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def photo(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0), x * 255.0 / w, y * 255.0 / h], -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def smart_resize(h, w, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280):
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def process(path):
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    rh, rw = smart_resize(h, w)
    img = np.array(Image.fromarray(img).resize((rw, rh), resample=Image.BICUBIC))
    img = (img.astype(np.float64) * (1 / 255)).astype(np.float32)
    img = ((img - MEAN) / STD).transpose(2, 0, 1)
    p = np.broadcast_to(img[None], (2,) + img.shape)
    gh, gw = rh // 14, rw // 14
    flat = p.reshape(1, 2, 3, gh // 2, 2, 14, gw // 2, 2, 14).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gh * gw, 1176)
    return np.ascontiguousarray(flat)


os.makedirs(out, exist_ok=True)
cases = []
for name, (w, h), fmt in [("640x480.jpg", (640, 480), "JPEG"), ("1280x960.jpg", (1280, 960), "JPEG"), ("640x480.png", (640, 480), "PNG"), ("1008x756.jpg", (1008, 756), "JPEG")]:
    f = os.path.join(out, name)
    if mode == "make":
        photo(h, w, w).save(f, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        continue
    process(f)
    t = time.perf_counter()
    for _ in range(reps):
        r = process(f)
    dt = (time.perf_counter() - t) / reps
    cases.append({"file": name, "ms": dt * 1000, "patches": r.shape[0], "sum": float(r.astype(np.float64).sum()),
                  "sha256": hashlib.sha256(r.astype("<f4").tobytes()).hexdigest()})
print(json.dumps({"pil": Image.__version__, "numpy": np.__version__, "cases": cases}))
