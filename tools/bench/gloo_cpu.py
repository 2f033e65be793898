#!/usr/bin/python3
"""CPU per op of PyTorch gloo collectives on loopback: user and kernel time, per rank.

The reference beside `bun run bench comm`'s own cpu columns (gloo_bench.py in ../shared/bench
gives gloo's times, not its CPU). Same tensors as gloo_bench.py (torch.ones, float32).

Usage: /usr/bin/python3 tools/bench/gloo_cpu.py WORLD ITERS OP:BYTES [OP:BYTES ...]
  OP: all_reduce | all_gather | all_to_all   (gloo 1.13 has no reduce_scatter)
Prints one JSON object per case: op, bytes, world, and per rank the wall ms per op and the
user / system CPU ms per op of the whole process (os.times, all threads), over ITERS ops
after 3 warm-up ops.
"""
import json, os, socket, sys, time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, iters, port, cases, q):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    for op, nbytes in cases:
        e = nbytes // 4
        if op == "all_reduce":
            t = torch.ones(e)
            fn = lambda: dist.all_reduce(t)
        elif op == "all_gather":
            src, outs = torch.ones(e // world), [torch.empty(e // world) for _ in range(world)]
            fn = lambda: dist.all_gather(outs, src)
        elif op == "all_to_all":
            a, b = torch.ones(e), torch.empty(e)
            fn = lambda: dist.all_to_all_single(b, a)
        else:
            raise SystemExit(f"gloo_cpu.py: unknown op {op} (all_reduce|all_gather|all_to_all)")
        for _ in range(3):
            fn()
        dist.barrier()
        c0, t0 = os.times(), time.perf_counter()
        for _ in range(iters):
            fn()
        t1, c1 = time.perf_counter(), os.times()
        q.put((op, nbytes, rank, (t1 - t0) / iters * 1e3, (c1.user - c0.user) / iters * 1e3, (c1.system - c0.system) / iters * 1e3))
        dist.barrier()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    world, iters = int(sys.argv[1]), int(sys.argv[2])
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in sys.argv[3:]]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, iters, port, cases, q)) for r in range(world)]
    for p in procs:
        p.start()
    got = [q.get() for _ in range(world * len(cases))]
    for p in procs:
        p.join()
    for op, nbytes in cases:
        ranks = sorted((g for g in got if g[0] == op and g[1] == nbytes), key=lambda g: g[2])
        print(json.dumps({
            "op": op, "bytes": nbytes, "world": world,
            "time_ms": [round(g[3], 2) for g in ranks],
            "user_ms": [round(g[4], 1) for g in ranks], "sys_ms": [round(g[5], 1) for g in ranks],
        }))
