#!/usr/bin/python3
"""PyTorch side of `bun run bench vl`: the plain-torch Qwen2-VL of test/fixtures/make_vl_fixtures.py
(written from transformers' modeling_qwen2_vl.py) on the same shapes: images/s through the vision
tower (forward, no grad) and tokens/s of training steps (forward + backward + AdamW) on packed rows
of B samples, each text + one image. Prints one JSON line."""
import json, os, resource, sys, time
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../test/fixtures"))
from make_vl_fixtures import VLModel, get_rope_index, loss_sum  # noqa: E402

cfg = json.loads(sys.argv[1])
a = json.loads(sys.argv[2])
torch.set_num_threads(a["threads"])
torch.manual_seed(0)
model = VLModel(cfg, False)
B, side, text = a["batch"], a["grid"], a["text"]
grid = [[1, side, side]] * B
n_img = side * side // 4
ids, cu, pos = [], [0], []
for b in range(B):
    s = [5 + (b * 7 + i) % 100 for i in range(text)] + [cfg["vision_start_token_id"]] + [cfg["image_token_id"]] * n_img + [cfg["vision_end_token_id"], 2]
    pos.append(get_rope_index(s, [grid[b]], cfg, False))
    ids += s
    cu.append(len(ids))
ids_t, pos3 = torch.tensor(ids), torch.cat(pos, dim=1)
pixels = torch.randn(B * side * side, 1176)


def timed(fn, n, warm):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0, time.process_time() - c0))
    ts.sort()
    return ts[len(ts) // 2]


with torch.no_grad():
    vt, vcpu = timed(lambda: model.visual(pixels, grid), a["steps"], a["warmup"])
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
labels = ids_t.clone()


def step():
    opt.zero_grad(set_to_none=True)
    logits, _ = model(ids_t, pos3, cu, pixels, grid)
    (loss_sum(logits, labels) / len(ids)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


st, scpu = timed(step, a["steps"], a["warmup"])
print(json.dumps({"images_per_s": B / vt, "vision_cpu_s": vcpu, "tokens_per_s": len(ids) / st, "step_s": st, "step_cpu_s": scpu,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__}))
