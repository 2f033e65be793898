// The memory side of the Kernels contract on the CPU backend: views share storage, uploads
// snapshot, reads copy, shared buffers, and edge checks that name the op, argument and expectation.
import { describe, expect, test } from "bun:test";
import { cpuWrap, createCpuKernels, createKernels, lrAt } from "../../kernels/index.ts";
import { tensorF, tensorI } from "./helpers.ts";

const k = await createKernels({ backend: "cpu", threads: 1 });

describe("cpu Kernels memory contract", () => {
  test("views into one flat buffer share storage; read returns a copy", async () => {
    const flat = k.alloc([10]);
    const a = k.view(flat, 2, [2, 2]), b = k.view(a, 1, [2]);
    k.upload(a, new Float32Array([1, 2, 3, 4]));
    k.scale(b, 10);
    expect(Array.from(await k.read(flat))).toEqual([0, 0, 1, 20, 30, 4, 0, 0, 0, 0]);
    const copy = await k.read(flat);
    copy[0] = 99;
    expect((await k.read(flat))[0]).toBe(0);
    expect(flat.host!.buffer instanceof SharedArrayBuffer).toBe(true);
    expect(k.alloc([3], "f32", { shared: false }).host!.buffer instanceof SharedArrayBuffer).toBe(false);
    await k.sync();
  });

  test("cpuWrap: a host array from another thread becomes a tensor without a copy", async () => {
    const shared = new Float32Array(new SharedArrayBuffer(16));
    const t = cpuWrap(shared, [2, 2], "from_worker");
    k.fill(t, 2);
    expect(Array.from(shared)).toEqual([2, 2, 2, 2]);
    expect(() => cpuWrap(shared, [3], "bad")).toThrow(/cpuWrap bad: shape \(3\) needs 3 elements, array has 4/);
  });

  test("upload snapshots its source; i32 tensors round-trip", async () => {
    const src = new Float32Array([1, 2, 3]);
    const t = tensorF(k, [3], src);
    src[0] = 7;
    expect(Array.from(await k.read(t))).toEqual([1, 2, 3]);
    const ids = tensorI(k, [5, -100, 2]);
    expect(Array.from(await k.read(ids))).toEqual([5, -100, 2]);
  });

  test("edge checks name the op, argument and expectation", () => {
    const x = k.alloc([4, 3]);
    expect(() => k.view(x, 10, [3])).toThrow(/offset 10 \+ 3 elements \(3\) exceeds its 12 elements/);
    expect(() => k.linearForward(k.alloc([4, 2]), x, k.alloc([2, 4]), null, 4, 3, 2)).toThrow(/linearForward.weight \(OC,C\): expected 6 elements, got 8/);
    expect(() => k.embeddingForward(k.alloc([2, 3]), tensorI(k, [0, 9]), x, 2, 3, 4)).toThrow(/embeddingForward.ids\[1\] = 9 is outside \[0, 4\)/);
    expect(() => k.crossEntropyFused(k.alloc([1]), null, null, k.alloc([2, 3]), x, tensorI(k, [-1, 0]), 2, 3, 4, 1)).toThrow(/targets\[0\] = -1 is outside \[0, 4\) and not -100/);
    const q = k.alloc([5, 2, 2]), kv = k.alloc([5, 1, 2]);
    expect(() => k.attentionForward(q, k.alloc([5, 2]), q, kv, kv, tensorI(k, [0, 3, 4]), 5, 2, 1, 2, 1, true)).toThrow(/cuSeqlens must start at 0 and end at T=5/);
    expect(() => k.attentionForward(q, k.alloc([5, 2]), q, kv, kv, tensorI(k, [0, 5]), 5, 2, 3, 2, 1, true)).toThrow(/NH=2 must be a multiple of NKV=3/);
    expect(() => k.upload(x, new Float32Array(5))).toThrow(/source has 5 elements/);
    expect(() => k.add(x, x, tensorI(k, [1]) as never)).toThrow(/add.b: expected dtype f32/);
    const freed = k.alloc([2]);
    k.free(freed);
    expect(() => k.zero(freed)).toThrow(/was freed/);
  });

  test("a missing OpenBLAS fails naming the path and the Debian package", () => {
    expect(() => createCpuKernels({ threads: 1, blasPath: "/nonexistent/libopenblas.so.0" })).toThrow(
      /OpenBLAS not found at \/nonexistent\/libopenblas.so.0; install the Debian package libopenblas0/);
    expect(() => createCpuKernels({ threads: 0 })).toThrow(/kernels.threads must be an integer >= 1, got 0/);
    expect(k.description).toMatch(/^cpu: .*; 1 threads; f32 GEMM (onednn|openblas).*; matmuls f32; element-wise: /);
  });

  test("oneDNN: forced but missing fails naming the Debian package; auto falls back to OpenBLAS and says why", () => {
    expect(() => createCpuKernels({ threads: 1, f32Gemm: "onednn", dnnlPath: "/nonexistent/libdnnl.so.2" })).toThrow(
      /oneDNN was asked for but oneDNN not found at \/nonexistent\/libdnnl.so.2 \(Debian package libdnnl2\)/);
    const k2 = createCpuKernels({ threads: 1, dnnlPath: "/nonexistent/libdnnl.so.2", mixedPrecision: true });
    expect(k2.description).toContain("f32 GEMM openblas");
    expect(k2.description).toContain("[oneDNN not found at /nonexistent/libdnnl.so.2 (Debian package libdnnl2)]");
    expect(k2.description).toContain("bf16 operands rounded, f32 accumulation on openblas");
  });

  test("lr schedule edge: warmup starts at lr_start, cosine ends at lr_min", () => {
    const o = { lr: 1, lr_min: 0.1, lr_start: 0, train_steps: 10, lr_warmup_ratio: 0.2, lr_decay_style: "cosine" as const, lr_decay_ratio: 1 };
    expect(lrAt(0, o)).toBe(0);
    expect(lrAt(1, o)).toBe(0.5);
    expect(lrAt(2, o)).toBe(1);
    expect(lrAt(10, o)).toBeCloseTo(0.1, 12);
    expect(lrAt(11, o)).toBe(0.1);
  });
});
