// Native element-wise loops of the fast CPU path, built at first use with gcc -O3 -march=native
// -fopenmp (native/index.ts) and called through bun:ffi. Each function mirrors a TypeScript loop
// of kernels/cpu/fast/ (kept as the fallback when gcc is missing) and is parity-tested against
// kernels/cpu/reference/. Written as plain loops that gcc vectorises to AVX-512/AVX2 for the CPU
// it is built on; no intrinsics, so the same source builds on any x86-64 or arm64 gcc.
//
// Threads: OpenMP over rows or fixed blocks (schedule(static)), the count set once by
// vt_set_threads (kernels.threads). Every reduction runs in a fixed order inside one row or one
// fixed block and blocks are combined in order, so results do not depend on the thread count.
// exp: vt_exp in vt_math.h (Cody-Waite range reduction + degree-6 polynomial, |rel err| < 2 ulp in f32),
// written so gcc vectorises it (no table, no libm call).

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "vt_math.h"

typedef int64_t i64;

// Parallelise a loop only when it has at least this much work (elements): below it the fork/join
// costs more than it saves.
#define PAR_MIN 32768

void vt_set_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }
int vt_get_threads(void) { return omp_get_max_threads(); }

// dst (rows, cols) contiguous bf16 <- src rows of `cols` floats, `lds` floats apart.
void vt_cast_bf16(const float* src, i64 rows, i64 cols, i64 lds, uint16_t* dst) {
#pragma omp parallel for schedule(static) if (rows * cols >= 4 * PAR_MIN)
  for (i64 r = 0; r < rows; r++) {
    const float* s = src + r * lds;
    uint16_t* d = dst + r * cols;
    for (i64 c = 0; c < cols; c++) d[c] = (uint16_t)vt_bf16_bits(s[c]);
  }
}

// The emulated path: dst (rows, cols) contiguous f32 <- src rounded to bf16 and widened back.
void vt_round_bf16(const float* src, i64 rows, i64 cols, i64 lds, float* dst) {
#pragma omp parallel for schedule(static) if (rows * cols >= 4 * PAR_MIN)
  for (i64 r = 0; r < rows; r++) {
    const float* s = src + r * lds;
    float* d = dst + r * cols;
    for (i64 c = 0; c < cols; c++) {
      union { float f; uint32_t u; } o;
      o.u = vt_bf16_bits(s[c]) << 16;
      d[c] = o.f;
    }
  }
}

// dst (n) f32 <- the bf16 values `bits` (n), exact (a unit's compute copy, once per use).
void vt_widen_bf16(const uint16_t* bits, i64 n, float* dst) {
#pragma omp parallel for schedule(static) if (n >= 4 * PAR_MIN)
  for (i64 i = 0; i < n; i++) {
    union { float f; uint32_t u; } o;
    o.u = (uint32_t)bits[i] << 16;
    dst[i] = o.f;
  }
}

// ---------------------------------------------------------------- SwiGLU
void vt_swiglu_fwd(float* out, const float* gate, const float* up, i64 n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (i64 i = 0; i < n; i++) {
    float x = gate[i];
    out[i] = x / (1.0f + vt_exp(-x)) * up[i];
  }
}

void vt_swiglu_bwd(float* dgate, float* dup, const float* dout, const float* gate, const float* up, i64 n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (i64 i = 0; i < n; i++) {
    float x = gate[i], g = dout[i];
    float sig = 1.0f / (1.0f + vt_exp(-x));
    float silu = x * sig;
    dgate[i] += g * up[i] * (sig + silu * (1.0f - sig));
    dup[i] += g * silu;
  }
}

// ---------------------------------------------------------------- RMSNorm (HF LlamaRMSNorm, f32 statistics)
// sum of x[c] * y[c] * z[c] (z null: x[c] * y[c]) in f64: 8 lanes (lane j sums c = j mod 8 in
// order), the tail, then the lanes in a fixed tree; vectorised, the same at any thread count.
static inline double vt_dot3(const float* x, const float* y, const float* z, i64 n) {
  double acc[8] = {0};
  i64 c = 0;
  if (z)
    for (; c + 8 <= n; c += 8)
      for (int j = 0; j < 8; j++) acc[j] += (double)x[c + j] * y[c + j] * z[c + j];
  else
    for (; c + 8 <= n; c += 8)
      for (int j = 0; j < 8; j++) acc[j] += (double)x[c + j] * y[c + j];
  double t = 0;
  for (; c < n; c++) t += z ? (double)x[c] * y[c] * z[c] : (double)x[c] * y[c];
  return t + (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

void vt_rmsnorm_fwd(float* out, float* rstd, const float* inp, const float* w, i64 N, i64 C, float eps) {
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
  for (i64 n = 0; n < N; n++) {
    const float* x = inp + n * C;
    float* o = out + n * C;
    double ss = vt_dot3(x, x, NULL, C);
    float r = (float)(1.0 / sqrt(ss / C + eps));
    rstd[n] = r;
    for (i64 c = 0; c < C; c++) o[c] = x[c] * r * w[c];
  }
}

// dinp += r w dout - (r^3 / C) (sum_c dout w x) x per row; dweight += sum_n dout x r, by column
// blocks (each column summed over rows in row order: deterministic at any thread count).
void vt_rmsnorm_bwd(float* dinp, float* dweight, const float* dout, const float* inp, const float* w, const float* rstd, i64 N, i64 C) {
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
  for (i64 n = 0; n < N; n++) {
    const float* x = inp + n * C;
    const float* g = dout + n * C;
    float* d = dinp + n * C;
    float r = rstd[n];
    double dot = vt_dot3(g, w, x, C);
    float k = (float)((double)r * r * r / C * dot);
    for (i64 c = 0; c < C; c++) d[c] += r * w[c] * g[c] - k * x[c];
  }
  if (!dweight) return;
  const i64 CB = 64;
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
  for (i64 c0 = 0; c0 < C; c0 += CB) {
    i64 c1 = c0 + CB < C ? c0 + CB : C;
    for (i64 n = 0; n < N; n++) {
      const float* x = inp + n * C;
      const float* g = dout + n * C;
      float r = rstd[n];
      for (i64 c = c0; c < c1; c++) dweight[c] += g[c] * x[c] * r;
    }
  }
}

// max(init, x[0..n)) in 16 lanes (vectorised: a sequential ?: chain is not), then combined; the
// same value as the sequential max for non-NaN inputs (max is exact and order-free).
static inline float vt_max(const float* x, i64 n, float init) {
  float lane[16];
  for (int j = 0; j < 16; j++) lane[j] = init;
  i64 i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
  float mx = init;
  for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  for (int j = 0; j < 16; j++) mx = lane[j] > mx ? lane[j] : mx;
  return mx;
}

// x[i] <- exp(x[i] - mx) for i < n, returning their sum: 16 f32 partial sums over the row (lane j
// sums i = j mod 16 in order), then the tail, then the lanes, in f64. The exp is its own loop (a
// plain map that vectorises); the sum re-reads x in L1/L2-sized pieces.
static inline double vt_exp_sum(float* x, i64 n, float mx) {
  float part[16] = {0};
  double sum = 0;
  i64 i = 0;
  for (i64 b0 = 0; b0 < n; b0 += 2048) {
    i64 b1 = b0 + 2048 < n ? b0 + 2048 : n;
    for (i64 u = b0; u < b1; u++) x[u] = vt_exp0(x[u] - mx);
    for (; i + 16 <= b1; i += 16)
      for (int j = 0; j < 16; j++) part[j] += x[i + j];
  }
  for (; i < n; i++) sum += x[i];
  for (int j = 0; j < 16; j++) sum += part[j];
  return sum;
}

// ---------------------------------------------------------------- RoPE (rotate_half pairs (i, i + HS/2))
// x (T, NH, HS); cos/sin (P, HS/2) tables, row positions[t]. Forward: out = x rotated by +angle
// (out may be x: each pair is read before it is written); backward: dx += dout rotated by -angle.
// Products and sums in f64, one rounding to f32 (the TypeScript loops' numbers).
void vt_rope(float* out, const float* inp, const float* cs, const float* sn, const int32_t* pos, i64 T, i64 NH, i64 HS, int backward) {
  const i64 h2 = HS / 2;
#pragma omp parallel for schedule(static) if (T * NH * HS >= PAR_MIN)
  for (i64 t = 0; t < T; t++) {
    const float* c = cs + (i64)pos[t] * h2;
    const float* s = sn + (i64)pos[t] * h2;
    for (i64 h = 0; h < NH; h++) {
      const float* x = inp + (t * NH + h) * HS;
      float* o = out + (t * NH + h) * HS;
      if (!backward)
        for (i64 i = 0; i < h2; i++) {
          double x1 = x[i], x2 = x[i + h2];
          o[i] = (float)(x1 * c[i] - x2 * s[i]);
          o[i + h2] = (float)(x2 * c[i] + x1 * s[i]);
        }
      else
        for (i64 i = 0; i < h2; i++) {
          double g1 = x[i], g2 = x[i + h2];
          o[i] = (float)(o[i] + (g1 * c[i] + g2 * s[i]));
          o[i + h2] = (float)(o[i + h2] + (g2 * c[i] - g1 * s[i]));
        }
    }
  }
}

// ---------------------------------------------------------------- cross-entropy rows
// Z (R,V) logits of R valid rows, y (R) their targets. Per row: loss[i] = logsumexp - z_y (f64);
// with grads, Z becomes dZ = (softmax - onehot) * gradScale in place, else exp(z - max).
void vt_ce_rows(float* Z, const int32_t* y, i64 R, i64 V, float gradScale, int grads, double* loss) {
#pragma omp parallel for schedule(static) if (R * V >= PAR_MIN)
  for (i64 i = 0; i < R; i++) {
    float* z = Z + i * V;
    float zy = z[y[i]];
    float mx = vt_max(z, V, -INFINITY);
    // 16 partial sums in f32 over the row, combined in f64: vectorised and in a fixed order
    double sum = vt_exp_sum(z, V, mx);
    loss[i] = (double)mx + log(sum) - (double)zy;
    if (grads) {
      float sc = (float)(gradScale / sum);
      for (i64 u = 0; u < V; u++) z[u] *= sc;
      z[y[i]] -= gradScale;
    }
  }
}

// ---------------------------------------------------------------- attention softmax pieces
// Keys of block row r (query i0 + r) among the block's bc from j0 that it sees: j <= i when causal.
static inline i64 vt_visible(i64 r, i64 bc, i64 i0, i64 j0, int causal) {
  if (!causal) return bc;
  i64 lim = i0 + r - j0 + 1;
  return lim < 0 ? 0 : (lim > bc ? bc : lim);
}

// Forward, one (br, bc) score block S of query rows [i0, i0+br) against keys [j0, j0+bc):
// online softmax update of the running max m, sum l (f64) and output accumulator O (br, HS);
// S becomes P = exp(S - m_new), masked keys (j > i when causal) 0.
void vt_attn_fwd_block(float* S, double* m, double* l, float* O, i64 br, i64 bc, i64 HS, i64 i0, i64 j0, int causal) {
  for (i64 r = 0; r < br; r++) {
    float* s = S + r * bc;
    i64 lim = vt_visible(r, bc, i0, j0, causal);
    float mx = vt_max(s, lim, (float)m[r]);
    double corr = m[r] == -INFINITY ? 0.0 : (double)vt_exp0((float)(m[r] - mx));
    if (corr != 1.0) {
      l[r] *= corr;
      float cf = (float)corr;
      for (i64 d = 0; d < HS; d++) O[r * HS + d] *= cf;
    }
    m[r] = mx;
    float part[16] = {0};
    i64 c = 0;
    for (; c + 16 <= lim; c += 16)
      for (int j = 0; j < 16; j++) {
        float e = vt_exp0(s[c + j] - mx);
        s[c + j] = e;
        part[j] += e;
      }
    double sum = 0;
    for (; c < lim; c++) {
      float e = vt_exp0(s[c] - mx);
      s[c] = e;
      sum += e;
    }
    for (int j = 0; j < 16; j++) sum += part[j];
    for (i64 u = lim; u < bc; u++) s[u] = 0;
    l[r] += sum;
  }
}

// Backward, one block. stage 0: S <- P = exp(S - lse) (m (br) holds the rows' lse), masked keys
// (j > i when causal) 0; stage 1: dP <- P (dP - D) (dS), D[r * dstride] the row's rowsum(dO * O).
void vt_attn_bwd_block(float* S, float* dP, const double* m, const float* D, i64 dstride, i64 br, i64 bc, i64 i0, i64 j0, int causal,
                       int stage) {
  for (i64 r = 0; r < br; r++) {
    float* s = S + r * bc;
    if (stage == 0) {
      i64 lim = vt_visible(r, bc, i0, j0, causal);
      float mo = (float)m[r];
      for (i64 c = 0; c < lim; c++) s[c] = vt_exp0(s[c] - mo);
      for (i64 c = lim; c < bc; c++) s[c] = 0;
    } else {
      float* p = dP + r * bc;
      float Dr = D[r * dstride];
      for (i64 c = 0; c < bc; c++) p[c] = s[c] * (p[c] - Dr);
    }
  }
}

// ---------------------------------------------------------------- optimizer
// Sum of squares in f64 over fixed blocks of 65536 elements, combined in order.
double vt_sumsq(const float* b, i64 n) {
  const i64 BLK = 65536;
  i64 nb = (n + BLK - 1) / BLK;
  double total = 0;
  // partials on the stack for small n, else in a static-size chunk loop of 4096 blocks
  for (i64 b0 = 0; b0 < nb; b0 += 4096) {
    i64 b1 = b0 + 4096 < nb ? b0 + 4096 : nb;
    double part[4096];
#pragma omp parallel for schedule(static) if (n >= 4 * PAR_MIN)
    for (i64 k = b0; k < b1; k++) {
      i64 s = k * BLK, e = s + BLK < n ? s + BLK : n;
      double acc[8] = {0};
      i64 i = s;
      for (; i + 8 <= e; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += (double)b[i + j] * b[i + j];
      for (; i < e; i++) acc[0] += (double)b[i] * b[i];
      part[k - b0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
    for (i64 k = b0; k < b1; k++) total += part[k - b0];
  }
  return total;
}

// torch.optim.AdamW step (decoupled weight decay), f64 temporaries, f32 stores: the same algebra
// as fast/loss_optim.ts.
void vt_adamw(float* param, const float* grad, float* m, float* v, i64 n, double lr, double b1, double b2, double eps,
              double wd, double step, double gs) {
  double stepSize = lr / (1 - pow(b1, step));
  double invBc2Sqrt = 1 / sqrt(1 - pow(b2, step));
  double decay = 1 - lr * wd;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (i64 i = 0; i < n; i++) {
    double g = (double)grad[i] * gs;
    double mi = b1 * m[i] + (1 - b1) * g;
    double vi = b2 * v[i] + (1 - b2) * g * g;
    m[i] = (float)mi;
    v[i] = (float)vi;
    param[i] = (float)((double)param[i] * decay - (stepSize * mi) / (sqrt(vi) * invBc2Sqrt + eps));
  }
}

// ---------------------------------------------------------------- peak FLOP/s probes (MFU denominators)
// Independent multiply-add chains on full-width vectors, `iters` rounds on each of the OpenMP
// threads; returns the FLOPs done (the caller times the call). 12 accumulators cover the FMA
// latency x throughput of current cores.
typedef float vt_v16 __attribute__((vector_size(64)));
double vt_peak_f32(i64 iters) {
  double total = 0;
#pragma omp parallel reduction(+ : total)
  {
    vt_v16 acc[12], x, y;
    for (int j = 0; j < 16; j++) x[j] = 1.0f + j * 1e-7f, y[j] = 0.999999f;
    for (int a = 0; a < 12; a++) acc[a] = x * (float)a;
    for (i64 i = 0; i < iters; i++)
      for (int a = 0; a < 12; a++) acc[a] = acc[a] * y + x;
    float s = 0;
    for (int a = 0; a < 12; a++)
      for (int j = 0; j < 16; j++) s += acc[a][j];
    total += (double)iters * 12 * 16 * 2 + (s == 12345.f ? 1 : 0); // s keeps the loop live
  }
  return total;
}

#ifdef __AVX512BF16__
#include <immintrin.h>
// vdpbf16ps: 32 bf16 products summed pairwise into 16 f32 lanes = 64 FLOPs per instruction.
double vt_peak_bf16(i64 iters) {
  double total = 0;
#pragma omp parallel reduction(+ : total)
  {
    __m512 acc[12];
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3f7f);
    for (int k = 0; k < 12; k++) acc[k] = _mm512_set1_ps((float)k);
    for (i64 i = 0; i < iters; i++)
      for (int k = 0; k < 12; k++) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
    float s = 0;
    for (int k = 0; k < 12; k++) s += _mm512_reduce_add_ps(acc[k]);
    total += (double)iters * 12 * 64 + (s == 12345.f ? 1 : 0);
  }
  return total;
}
#else
double vt_peak_bf16(i64 iters) { (void)iters; return 0; } // no AVX512-BF16: the caller measures otherwise
#endif
