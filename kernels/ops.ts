// The op contract: every backend (cpu, webgpu) exports one object implementing `Kernels`, so the
// type checker proves completeness and one test suite runs against each backend.
//
// Execution model (asynchronous device, like CUDA streams / WebGPU queues):
// - Every op ENQUEUES and returns void. Ops run in call order on one queue, so a later op sees an
//   earlier op's writes. Host code must not look at results until a sync point.
// - Sync points are the only awaits: `await k.read(t)` (copy one tensor to the host) and
//   `await k.sync()` (wait for everything enqueued). The CPU backend runs each op synchronously
//   inside the call, so its sync points resolve at once; code must still await them.
// - `upload` snapshots its source at call time: the host array may be reused right after.
//
// Conventions:
// - Outputs come first, then inputs, then sizes, then scalars. Sizes are passed explicitly (llm.c
//   style) so a view of any shape with the right element count can be used; backends check
//   dtypes and element counts at the edge and throw naming the op and argument.
// - Backward ops ACCUMULATE (+=) into every gradient output, activation gradients included; the
//   caller zeroes gradient buffers when a step (or a micro-batch's activation grads) starts.
//   A gradient output passed as `null` is not computed.
// - f32 everywhere for math; i32 for token ids, targets, positions, cu_seqlens. Reductions
//   (norms, softmax sums, losses) accumulate in at least f32, in a fixed order (bit-reproducible).
// - Shape letters: see tensor.ts. In-place use (out === inp) is allowed only where noted.

import type { BackendName, DType, HostArray, Tensor } from "./tensor.ts";

/** Activation of `geluForward`, by its Hugging Face `hidden_act` name: "gelu" is the exact
 *  x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (nn.GELU()); "quick_gelu" is x * sigmoid(1.702 x). */
export type GeluKind = "gelu" | "quick_gelu";

export interface AllocOptions {
  /** CPU: back the storage with a SharedArrayBuffer so another thread (the mesh transport
   *  worker) can read/write it without copies. Ignored by device backends. Default true on cpu. */
  shared?: boolean;
  /** A name for errors and debugging ("layers.3.flat_grads"). */
  name?: string;
}

/** PyTorch AdamW (torch.optim.AdamW, foreach=False semantics), one step on a flat range. */
export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled: param *= 1 - lr * weightDecay before the Adam update. */
  weightDecay: number;
  /** 1-based step count t used in the bias corrections 1 - beta^t. */
  step: number;
  /** The gradient is multiplied by this first (the clip coefficient; 1 for none). Grad is not modified. */
  gradScale: number;
}

/** A grouped-GEMM dimension that is each group's own row count n_e (see Kernels.groupedGemm). */
export const GROUP_ROWS = -1;

/** Where one operand's group-e matrix lives: element perExpert * e + perRow * off[e], rows ld apart. */
export interface GroupLayout { perExpert: number; perRow: number; ld: number }

/** Kernels.groupedGemm's shapes: M, N, K a number or GROUP_ROWS; E groups; layouts per operand. */
export interface GroupedGemmSpec {
  E: number; M: number; N: number; K: number;
  transA: boolean; transB: boolean; alpha: number; beta: number;
  out: GroupLayout; a: GroupLayout; b: GroupLayout;
}

/**
 * Mixed precision's parameter side, as PyTorch FSDP2's MixedPrecisionPolicy(param_dtype=bf16):
 * the parameters a unit computes with are its f32 master values rounded to bf16 (round to
 * nearest even), cast once per unit use by a plan (parallel/mixed_precision.ts, parallel/fsdp.ts),
 * not at every matmul. Backends with bf16 matmuls implement it (cpu under mixed precision).
 */
export interface Bf16Params {
  /** bits (N) <- src (N) rounded to bf16 (an FSDP shard before its bf16 all-gather). */
  cast(bits: Uint16Array, src: Float32Array): void;
  /** dst (N) <- the bf16 values `bits` (N) as f32 (exact), and until release(dst) every matmul
   *  operand inside dst is taken as those bf16 numbers with no cast of its own. Non-matmul ops
   *  (norm weights, biases, embedding rows) read dst's f32 values, which are the bf16 ones. */
  load(dst: Tensor<"f32">, bits: Uint16Array): void;
  /** dst is no longer a compute copy (its storage may be reused for anything). */
  release(dst: Tensor<"f32">): void;
  /** true: the matmuls keep reading `bits` until release (oneDNN); false: bits are free after load. */
  readonly readsBits: boolean;
}

/**
 * Host memory a plan has allocated and is not using at the moment, lent to a kernel's large
 * scratch for the length of ONE synchronous op call (borrow at its start, give back before it
 * returns), so the scratch costs no memory of its own: FSDP's gather buffers are idle while the
 * tied head's cross-entropy runs, and its (R,V) logits chunk fits in them (issue 17's memory per
 * rank). Contents are undefined on borrow; a lender never allocates for a borrow.
 */
export interface ScratchLender {
  /** A free (floats) f32 host array, or null when no free range is that long. */
  borrow(floats: number): Float32Array | null;
  /** The array is free again (its contents are the lender's). */
  giveBack(a: Float32Array): void;
}

export interface Kernels {
  readonly backend: BackendName;
  /** One line for the startup log: library, threads, adapter. */
  readonly description: string;
  /** Mixed precision's parameter casts (see Bf16Params); null when matmuls are f32. */
  readonly bf16Params: Bf16Params | null;
  /** Where the fast CPU ops take their large scratch from first (null: their own arrays, kept
   *  between calls); backends without host scratch do not have it. */
  lendScratch?(lender: ScratchLender | null): void;

  // ---------------------------------------------------------------- memory and sync points
  /** New zero-filled contiguous tensor. dtype defaults to f32. */
  alloc<D extends DType = "f32">(shape: readonly number[], dtype?: D, opts?: AllocOptions): Tensor<D>;
  /** A view of `shape` starting `offsetElems` elements into `flat` (any tensor; offsets add up).
   *  Throws if it does not fit. The view shares storage: writes through it land in `flat`. */
  view<D extends DType>(flat: Tensor<D>, offsetElems: number, shape: readonly number[]): Tensor<D>;
  /** Release device memory of a tensor allocated with `alloc` (views: no-op). Using it afterwards is an error. */
  free(t: Tensor): void;
  /** Enqueue host -> tensor copy. `src.length` must equal `dst.numel`. `src` is snapshotted now. */
  upload<D extends DType>(dst: Tensor<D>, src: HostArray<D>): void;
  /** SYNC POINT: a fresh host copy of `t` after all enqueued work that precedes this call. */
  read<D extends DType>(t: Tensor<D>): Promise<HostArray<D>>;
  /** SYNC POINT: `read` into a caller's array of t.numel (e.g. a SharedArrayBuffer the mesh moves),
   *  so a step that stages the same tensors every time allocates nothing. */
  readInto(t: Tensor<"f32">, dst: Float32Array): Promise<void>;
  /** SYNC POINT: resolves when everything enqueued so far has completed. */
  sync(): Promise<void>;

  // ---------------------------------------------------------------- elementwise (any shape, same numel)
  /** t <- 0 */
  zero(t: Tensor): void;
  /** t <- value */
  fill(t: Tensor, value: number): void;
  /** dst <- src (same dtype and numel; may be views of one storage if they do not overlap) */
  copy(dst: Tensor, src: Tensor): void;
  /** out <- a + b (f32; out may alias a or b) */
  add(out: Tensor<"f32">, a: Tensor<"f32">, b: Tensor<"f32">): void;
  /** Strided column copy between row-major matrices: for n < N, j < width:
   *  dst[n*dstW + dstOff + j*dstStride] <- (or += when accumulate) src[n*srcW + srcOff + j*srcStride].
   *  Splits and joins along the last dim (MLA's [nope | rope] heads, (de)interleaving RoPE pairs);
   *  the written elements must be distinct (dstStride >= 1, width * dstStride within a row). */
  copyCols(dst: Tensor<"f32">, src: Tensor<"f32">, N: number, width: number, dstW: number, dstOff: number, dstStride: number,
    srcW: number, srcOff: number, srcStride: number, accumulate: boolean): void;
  /** t <- t * s */
  scale(t: Tensor<"f32">, s: number): void;
  /** y <- y + alpha * x */
  axpy(y: Tensor<"f32">, alpha: number, x: Tensor<"f32">): void;

  // ---------------------------------------------------------------- matmul
  /** General GEMM, row-major: out (M,N) <- alpha * op(a) @ op(b) + beta * out, where
   *  op(a) is (M,K): a is (M,K), or (K,M) when transA; op(b) is (K,N): b is (K,N), or (N,K) when transB.
   *  beta = 0 overwrites out (NaNs in out do not propagate). */
  gemm(
    out: Tensor<"f32">, a: Tensor<"f32">, b: Tensor<"f32">,
    M: number, N: number, K: number, transA: boolean, transB: boolean, alpha: number, beta: number,
  ): void;
  /** out (N,OC) <- inp (N,C) @ weight (OC,C)^T + bias (OC)  (bias may be null; HF nn.Linear layout).
   *  Also the inference logits path: out (N,V) <- hidden (N,C) @ lm_head (V,C)^T. */
  linearForward(out: Tensor<"f32">, inp: Tensor<"f32">, weight: Tensor<"f32">, bias: Tensor<"f32"> | null,
    N: number, C: number, OC: number): void;
  /** dinp (N,C) += dout (N,OC) @ weight (OC,C); dweight (OC,C) += dout^T @ inp (N,C); dbias (OC) += sum_n dout.
   *  Any gradient output may be null (not computed). */
  linearBackward(dinp: Tensor<"f32"> | null, dweight: Tensor<"f32"> | null, dbias: Tensor<"f32"> | null,
    dout: Tensor<"f32">, inp: Tensor<"f32">, weight: Tensor<"f32">, N: number, C: number, OC: number): void;

  // ---------------------------------------------------------------- embedding
  /** out (T,C) <- table (V,C)[ids (T)]. An id outside [0,V) is an error (the CPU backend throws at the call). */
  embeddingForward(out: Tensor<"f32">, ids: Tensor<"i32">, table: Tensor<"f32">, T: number, C: number, V: number): void;
  /** dtable (V,C) [ids[t]] += dout (T,C) [t], in token order (deterministic). */
  embeddingBackward(dtable: Tensor<"f32">, dout: Tensor<"f32">, ids: Tensor<"i32">, T: number, C: number, V: number): void;

  // ---------------------------------------------------------------- RMSNorm (HF LlamaRMSNorm, f32)
  /** out (N,C) <- inp * rsqrt(mean(inp^2) + eps) * weight (C); rstd (N) <- rsqrt(mean(inp^2) + eps).
   *  Per-head qk-norm (Qwen3) is N = T*NH rows of C = HS. out may alias inp. */
  rmsnormForward(out: Tensor<"f32">, rstd: Tensor<"f32">, inp: Tensor<"f32">, weight: Tensor<"f32">,
    N: number, C: number, eps: number): void;
  /** dinp (N,C) += d/dinp, dweight (C) += sum_n dout * inp * rstd; from dout (N,C), inp (N,C), weight (C), rstd (N). */
  rmsnormBackward(dinp: Tensor<"f32">, dweight: Tensor<"f32"> | null, dout: Tensor<"f32">, inp: Tensor<"f32">,
    weight: Tensor<"f32">, rstd: Tensor<"f32">, N: number, C: number): void;

  // ---------------------------------------------------------------- LayerNorm (torch nn.LayerNorm, f32)
  /** out (N,C) <- (inp - mean) * rstd * weight (C) + bias (C); mean (N), rstd (N) = 1/sqrt(var + eps)
   *  with the biased variance (torch). Saved mean/rstd feed the backward. out may alias inp. */
  layernormForward(out: Tensor<"f32">, mean: Tensor<"f32">, rstd: Tensor<"f32">, inp: Tensor<"f32">,
    weight: Tensor<"f32">, bias: Tensor<"f32">, N: number, C: number, eps: number): void;
  /** dinp (N,C) +=, dweight (C) += sum_n dout * xhat, dbias (C) += sum_n dout; from dout, inp, weight, mean, rstd.
   *  dweight/dbias may be null (not computed). */
  layernormBackward(dinp: Tensor<"f32">, dweight: Tensor<"f32"> | null, dbias: Tensor<"f32"> | null, dout: Tensor<"f32">,
    inp: Tensor<"f32">, weight: Tensor<"f32">, mean: Tensor<"f32">, rstd: Tensor<"f32">, N: number, C: number): void;

  // ---------------------------------------------------------------- GELU (exact erf form, or quick)
  /** out (N) <- act(inp (N)), act by `kind` (see GeluKind). out may alias inp. */
  geluForward(out: Tensor<"f32">, inp: Tensor<"f32">, N: number, kind: GeluKind): void;
  /** dinp (N) += dout * act'(inp). */
  geluBackward(dinp: Tensor<"f32">, dout: Tensor<"f32">, inp: Tensor<"f32">, N: number, kind: GeluKind): void;

  // ---------------------------------------------------------------- rotary embedding (HF rotate_half)
  /** out (T,NH,HS) <- inp * cos + rotate_half(inp) * sin, where for token t at position p = positions[t]
   *  and i < HS/2: cos/sin (P, HS/2) tables from `ropeCosSin` (rope.ts) give angle p * inv_freq[i],
   *  used for both halves (HF's cat(freqs, freqs)). Positions restart per packed sample; p < P.
   *  Apply to q (NH heads) and k (NKV heads) separately. out may alias inp. */
  ropeForward(out: Tensor<"f32">, inp: Tensor<"f32">, cos: Tensor<"f32">, sin: Tensor<"f32">,
    positions: Tensor<"i32">, T: number, NH: number, HS: number): void;
  /** dinp (T,NH,HS) += rotation of dout by -angle (the transpose of ropeForward). */
  ropeBackward(dinp: Tensor<"f32">, dout: Tensor<"f32">, cos: Tensor<"f32">, sin: Tensor<"f32">,
    positions: Tensor<"i32">, T: number, NH: number, HS: number): void;

  // ---------------------------------------------------------------- attention (varlen, causal or full, GQA/MQA)
  /** out (T,NH,HS), lse (T,NH) <- softmax(q k^T * scale) v within each packed sample:
   *  token t of sample s = [cu[s], cu[s+1]) attends to keys j with cu[s] <= j <= t when `causal`
   *  (decoders), to every key of its sample cu[s] <= j < cu[s+1] otherwise (vision towers), never
   *  across samples. Empty samples (cu[s] = cu[s+1]) are allowed.
   *  q (T,NH,HS), k/v (T,NKV,HS), NH % NKV == 0, query head h uses kv head floor(h / (NH/NKV)).
   *  cuSeqlens (S+1) i32 with cu[0]=0, cu[S]=T. lse is the natural-log logsumexp of the scaled scores,
   *  saved for backward (flash style: no T x T matrix is kept). scale is usually 1/sqrt(HS). */
  attentionForward(out: Tensor<"f32">, lse: Tensor<"f32">, q: Tensor<"f32">, k: Tensor<"f32">, v: Tensor<"f32">,
    cuSeqlens: Tensor<"i32">, T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void;
  /** dq (T,NH,HS), dk/dv (T,NKV,HS) += gradients, from dout (T,NH,HS) and the forward's q, k, v, out, lse. */
  attentionBackward(dq: Tensor<"f32">, dk: Tensor<"f32">, dv: Tensor<"f32">, dout: Tensor<"f32">,
    q: Tensor<"f32">, k: Tensor<"f32">, v: Tensor<"f32">, out: Tensor<"f32">, lse: Tensor<"f32">,
    cuSeqlens: Tensor<"i32">, T: number, NH: number, NKV: number, HS: number, scale: number, causal: boolean): void;

  // ---------------------------------------------------------------- SwiGLU
  /** out (N) <- silu(gate (N)) * up (N), silu(x) = x * sigmoid(x). N is T*I for the MLP. */
  swigluForward(out: Tensor<"f32">, gate: Tensor<"f32">, up: Tensor<"f32">, N: number): void;
  /** dgate (N) += dout * up * silu'(gate); dup (N) += dout * silu(gate). */
  swigluBackward(dgate: Tensor<"f32">, dup: Tensor<"f32">, dout: Tensor<"f32">, gate: Tensor<"f32">,
    up: Tensor<"f32">, N: number): void;

  // ---------------------------------------------------------------- mixture of experts
  // Routing is decided on the host (models/blocks/router.ts); the token -> expert-row gather and
  // its deterministic scatter-add are embeddingForward/embeddingBackward with the (T,C) hidden
  // states as the table; the experts run as one GEMM group per expert (kernels/grouped_gemm.ts).
  /** out (T,C) <- sum over k = 0..K-1, in that order, of weights (T,K)[t,k] * rows (R,C)[idx (T,K)[t,k]]:
   *  a MoE layer's combine, rows being the experts' outputs sorted by expert (a shared expert's T
   *  rows can ride along as one more route). idx (T,K) i32 entries are distinct and in [0,R). */
  moeCombine(out: Tensor<"f32">, rows: Tensor<"f32">, idx: Tensor<"i32">, weights: Tensor<"f32">,
    T: number, K: number, C: number, R: number): void;
  /** drows (R,C)[idx[t,k]] += weights[t,k] * dout[t]; dweights (T,K) += dot(dout[t], rows[idx[t,k]]).
   *  Either output may be null (not computed). Same idx contract as moeCombine. */
  moeCombineBackward(drows: Tensor<"f32"> | null, dweights: Tensor<"f32"> | null, dout: Tensor<"f32">, rows: Tensor<"f32">,
    idx: Tensor<"i32">, weights: Tensor<"f32">, T: number, K: number, C: number, R: number): void;

  /** Grouped GEMM over the E expert groups of a dropless MoE layer, all groups in one call (one
   *  dispatch on WebGPU). Group e has n_e = off[e+1] - off[e] rows (off (E+1) i32, 0 = off[0] <=
   *  ... <= off[E], the experts' row offsets after sorting by expert) and computes
   *    out_e (M,N) <- alpha * op(a_e) (M,K) @ op(b_e) (K,N) + beta * out_e
   *  where each of M, N, K is a number or GROUP_ROWS (= n_e), and operand X's group matrix starts
   *  at element X.perExpert * e + X.perRow * off[e] with rows X.ld elements apart (op(a) = a^T when
   *  transA: a_e stored (K,M)). A group with M or N zero is skipped; K zero gives beta * out_e.
   *  `maxRows` >= every n_e (sizes the WebGPU grid; the host knows it from its routing). */
  groupedGemm(out: Tensor<"f32">, a: Tensor<"f32">, b: Tensor<"f32">, off: Tensor<"i32">, maxRows: number, g: GroupedGemmSpec): void;

  // ---------------------------------------------------------------- LM head + cross-entropy, fused
  /** Next-token cross-entropy over logits = hidden (T,C) @ weight (V,C)^T without materialising
   *  (T,V): rows are processed in chunks. targets (T) i32 are already shifted (targets[t] scores
   *  logits row t); -100 = ignored. loss (1) += SUM over valid rows of -log softmax(logits)[target];
   *  dhidden (T,C) += gradScale * dloss/dhidden, dweight (V,C) += gradScale * dloss/dweight
   *  (gradScale = 1 / global valid tokens for VeOmni's normalisation). dhidden/dweight may be null
   *  (evaluation). A target outside [0,V) other than -100 throws.
   *  dweight may be `weight` itself (same storage and offset): the gradient then REPLACES the
   *  weight (dweight <- gradScale * dloss/dweight, no +=) after its last read, so one (V,C) buffer
   *  serves both (FSDP: a tied head's gathered embedding becomes its gradient; the fast CPU path
   *  computes the logits a second time, per block of vocabulary rows). CPU backends only. */
  crossEntropyFused(loss: Tensor<"f32">, dhidden: Tensor<"f32"> | null, dweight: Tensor<"f32"> | null,
    hidden: Tensor<"f32">, weight: Tensor<"f32">, targets: Tensor<"i32">,
    T: number, C: number, V: number, gradScale: number): void;

  // ---------------------------------------------------------------- optimizer
  /** out (1) <- sum over all bufs of sum of squares (accumulated in f64, buffers in order).
   *  Global grad norm = sqrt(all-reduced sum); clip with `clipCoefficient` (optim.ts). */
  sumSquares(out: Tensor<"f32">, bufs: readonly Tensor<"f32">[]): void;
  /** One AdamW step over flat ranges of equal numel: param, grad, m (exp_avg), v (exp_avg_sq). */
  adamw(param: Tensor<"f32">, grad: Tensor<"f32">, m: Tensor<"f32">, v: Tensor<"f32">, p: AdamWParams): void;
}
