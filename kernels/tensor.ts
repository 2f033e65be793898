// The tensor handle every backend shares: a shape, a dtype and a view into backend-owned storage.
// Tensors are views: `offset` elements into a `Storage`, contiguous row-major, `numel` long.
// Parameters, gradients and optimizer state live in a few large flat f32 buffers with named
// views into them (llm.c style), so FSDP can shard / all-gather a whole layer's flat buffer and
// the optimizer can run over one flat range.
//
// Shape letters used across kernels/: T tokens in a packed row (or N rows in general), C model
// width, OC output width, V vocabulary, NH query heads, NKV key/value heads, HS head size,
// S samples in a packed row (cu_seqlens has S+1 entries).

export type DType = "f32" | "i32";

/** The host array type of a dtype: what `upload` takes and `read` returns. */
export type HostArray<D extends DType = DType> = D extends "f32"
  ? Float32Array
  : D extends "i32"
    ? Int32Array
    : never;

export type BackendName = "cpu" | "webgpu";

/** Backend-owned memory. A backend narrows this (the CPU backend adds `data`, a typed array). */
export interface Storage {
  readonly backend: BackendName;
  readonly dtype: DType;
  /** Length in elements. */
  readonly numel: number;
}

export interface Tensor<D extends DType = DType> {
  readonly shape: readonly number[];
  readonly dtype: D;
  /** Product of `shape` (1 for a scalar shape []). */
  readonly numel: number;
  readonly storage: Storage;
  /** Element offset of this view into `storage`. */
  readonly offset: number;
  /**
   * CPU backend only: the typed array covering exactly this tensor's elements, sharing memory
   * with `storage` (a subarray). Lets host code on the CPU backend (the mesh transport thread,
   * checkpoint writers) touch the bytes without a copy. Undefined on device backends: use
   * `await k.read(t)` there. Reading it is only valid after the producing ops completed, which on
   * the CPU backend is always the case (its ops run synchronously when enqueued).
   */
  readonly host?: HostArray<D>;
}

/** Element count of a shape; throws on negative or non-integer dimensions. */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`tensor: bad dimension ${d} in shape [${shape.join(",")}]`);
    n *= d;
  }
  return n;
}

export function shapeStr(shape: readonly number[]): string {
  return `(${shape.join(",")})`;
}

/** Bytes per element (both dtypes are 4 bytes wide). */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, i32: 4 };

/**
 * Contract check used at op edges: `t` must have dtype `dtype` and exactly `numel` elements.
 * `what` names the op and argument, e.g. "rmsnormForward.inp (N,C)".
 */
export function expectTensor(t: Tensor, what: string, dtype: DType, numel: number): void {
  if (t.dtype !== dtype) throw new Error(`${what}: expected dtype ${dtype}, got ${t.dtype} ${shapeStr(t.shape)}`);
  if (t.numel !== numel) {
    throw new Error(`${what}: expected ${numel} elements, got ${t.numel} (shape ${shapeStr(t.shape)})`);
  }
}
