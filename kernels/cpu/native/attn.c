// Native varlen attention (GQA/MQA; causal, or full within each sample): the flash blocks of
// kernels/cpu/fast/attention.ts (kept as the TypeScript fallback and parity-tested against
// kernels/cpu/reference/), with the whole loop nest in C so the block GEMMs, the softmax pieces
// (vec.c vt_attn_fwd_block / vt_attn_bwd_block) and the threads stay out of JavaScript.
//
// Layouts: q, out, dq, dout (T, NH, HS); k, v, dk, dv (T, NKV, HS); lse, D (T, NH); cu the sample
// boundaries. Blocks: BR query rows x up to BC keys; S = scale Q K^T per block (f32 out),
// online softmax in f32 with f64 running sums, O += P V; backward recomputes P = exp(S - lse)
// (FlashAttention-2): dV += P^T dO, dP = dO V^T, dS = P (dP - D), dQ += scale dS K,
// dK += scale dS^T Q.
//
// GEMMs: oneDNN's row-major C GEMMs, found with dlsym in the libdnnl the TypeScript side loaded
// (vt_attn_init). Operand modes: 0 f32 (dnnl_sgemm straight on the strided layouts); 1 bf16
// (every GEMM operand cast to bf16, round to nearest even, dnnl_gemm_bf16bf16f32, f32
// accumulation and output: PyTorch bf16 autocast's matmuls in attention, whose softmax stays f32);
// 2 the same numbers emulated (operands rounded to bf16 values held in f32, dnnl_sgemm).
//
// Threads: OpenMP over independent tasks, each running its GEMMs on one thread (oneDNN runs
// single-threaded inside a parallel region): forward over (sample, head), backward over
// (sample, KV head) because the heads of a group add into the same dK/dV rows. Each task's loops
// run in a fixed order, so results do not depend on the thread count.

#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vt_math.h"

typedef int64_t i64;

typedef int (*sgemm_fn)(char, char, i64, i64, i64, float, const float*, i64, const float*, i64, float, float*, i64);
typedef int (*bgemm_fn)(char, char, i64, i64, i64, float, const uint16_t*, i64, const uint16_t*, i64, float, float*, i64);
static sgemm_fn dnn_sgemm;
static bgemm_fn dnn_bgemm;

// vec.c
void vt_attn_fwd_block(float* S, double* m, double* l, float* O, i64 br, i64 bc, i64 HS, i64 i0, i64 j0, int causal);
void vt_attn_bwd_block(float* S, float* dP, const double* m, const float* D, i64 dstride, i64 br, i64 bc, i64 i0, i64 j0, int causal,
                       int stage);

// Find oneDNN's GEMMs in the library at `path` (already loaded by the caller). 0: ready.
int vt_attn_init(const char* path) {
  void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) return 1;
  dnn_sgemm = (sgemm_fn)dlsym(h, "dnnl_sgemm");
  dnn_bgemm = (bgemm_fn)dlsym(h, "dnnl_gemm_bf16bf16f32");
  return dnn_sgemm && dnn_bgemm ? 0 : 2;
}

// An operand: f32 data in place (mode 0), or a contiguous bf16 (mode 1) / bf16-rounded f32
// (mode 2) copy. `p` points at element 0, `ld` is its row stride in elements.
typedef struct {
  const void* p;
  i64 ld;
  int es; // bytes per element
} opnd;

static inline const void* at(opnd o, i64 row) { return (const char*)o.p + row * o.ld * o.es; }

// src rows (rows, cols), `lds` floats apart, as an operand of `mode`; buf holds rows*cols*4 bytes.
static opnd prep(int mode, const float* src, i64 rows, i64 cols, i64 lds, void* buf) {
  opnd o;
  if (mode == 0) {
    o.p = src, o.ld = lds, o.es = 4;
    return o;
  }
  if (mode == 1) {
    uint16_t* d = (uint16_t*)buf;
    for (i64 r = 0; r < rows; r++)
      for (i64 c = 0; c < cols; c++) d[r * cols + c] = (uint16_t)vt_bf16_bits(src[r * lds + c]);
    o.es = 2;
  } else {
    float* d = (float*)buf;
    for (i64 r = 0; r < rows; r++)
      for (i64 c = 0; c < cols; c++) {
        union { float f; uint32_t u; } w;
        w.u = vt_bf16_bits(src[r * lds + c]) << 16;
        d[r * cols + c] = w.f;
      }
    o.es = 4;
  }
  o.p = buf, o.ld = cols;
  return o;
}

// C (M,N) <- alpha op(A) op(B) + beta C, A and B operands of `mode`, C f32 row-major.
static void mm(int mode, int ta, int tb, i64 M, i64 N, i64 K, float alpha, const void* A, i64 lda, const void* B, i64 ldb, float beta,
               float* C, i64 ldc) {
  if (M == 0 || N == 0 || K == 0) return; // K = 0 never happens: every block has >= 1 key and row
  char a = ta ? 'T' : 'N', b = tb ? 'T' : 'N';
  if (mode == 1)
    dnn_bgemm(a, b, M, N, K, alpha, (const uint16_t*)A, lda, (const uint16_t*)B, ldb, beta, C, ldc);
  else
    dnn_sgemm(a, b, M, N, K, alpha, (const float*)A, lda, (const float*)B, ldb, beta, C, ldc);
}

static inline i64 imin(i64 a, i64 b) { return a < b ? a : b; }

// Both entry points return 0, or 1 when a thread could not allocate its scratch (nothing is
// written then for that thread's tasks: the caller throws).
int vt_attn_fwd(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* cu, i64 nseq, i64 NH, i64 NKV,
                 i64 HS, float scale, int causal, int mode, i64 BR, i64 BC) {
  const i64 G = NH / NKV, ldq = NH * HS, ldk = NKV * HS, ntask = nseq * NH;
  const int nthr = omp_get_max_threads();
  int failed = 0;
#pragma omp parallel if (nthr > 1 && ntask >= nthr) reduction(| : failed)
  {
    i64 cap = 0;
    char *qb = NULL, *kb = NULL, *vb = NULL;
    float* S = malloc(sizeof(float) * BR * BC);
    char* pb = mode ? malloc(sizeof(float) * BR * BC) : NULL;
    float* O = malloc(sizeof(float) * BR * HS);
    double* m = malloc(sizeof(double) * BR);
    double* l = malloc(sizeof(double) * BR);
    failed = !S || (mode && !pb) || !O || !m || !l;
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < ntask; task++) {
      const i64 s = task / NH, h = task % NH, g = h / G;
      const i64 s0 = cu[s], len = cu[s + 1] - s0;
      if (len <= 0 || failed) continue;
      if (mode && len > cap) {
        cap = len;
        free(qb), free(kb), free(vb);
        qb = malloc(cap * HS * 4), kb = malloc(cap * HS * 4), vb = malloc(cap * HS * 4);
        if (!qb || !kb || !vb) {
          failed = 1;
          continue;
        }
      }
      const opnd Q = prep(mode, q + s0 * ldq + h * HS, len, HS, ldq, qb);
      const opnd K = prep(mode, k + s0 * ldk + g * HS, len, HS, ldk, kb);
      const opnd V = prep(mode, v + s0 * ldk + g * HS, len, HS, ldk, vb);
      for (i64 i0 = 0; i0 < len; i0 += BR) {
        const i64 br = imin(BR, len - i0), jEnd = causal ? i0 + br : len;
        memset(O, 0, sizeof(float) * br * HS);
        for (i64 r = 0; r < br; r++) m[r] = -INFINITY, l[r] = 0;
        for (i64 j0 = 0; j0 < jEnd; j0 += BC) {
          const i64 bc = imin(BC, jEnd - j0);
          mm(mode, 0, 1, br, bc, HS, scale, at(Q, i0), Q.ld, at(K, j0), K.ld, 0, S, bc);
          vt_attn_fwd_block(S, m, l, O, br, bc, HS, i0, j0, causal);
          const opnd P = prep(mode, S, br, bc, bc, pb);
          mm(mode, 0, 0, br, HS, bc, 1, P.p, P.ld, at(V, j0), V.ld, 1, O, HS);
        }
        for (i64 r = 0; r < br; r++) {
          const double inv = 1 / l[r];
          float* o = out + (s0 + i0 + r) * ldq + h * HS;
          for (i64 d = 0; d < HS; d++) o[d] = (float)((double)O[r * HS + d] * inv);
          lse[(s0 + i0 + r) * NH + h] = (float)(m[r] + log(l[r]));
        }
      }
    }
    free(qb), free(kb), free(vb), free(S), free(pb), free(O), free(m), free(l);
  }
  return failed;
}

// D (T*NH) scratch from the caller: rowsum(dout * out) per (token, head).
int vt_attn_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v, const float* out,
                 const float* lse, float* D, const int32_t* cu, i64 nseq, i64 T, i64 NH, i64 NKV, i64 HS, float scale, int causal, int mode,
                 i64 BR, i64 BC) {
  const i64 G = NH / NKV, ldq = NH * HS, ldk = NKV * HS, ntask = nseq * NKV;
  const int nthr = omp_get_max_threads();
#pragma omp parallel for schedule(static) if (nthr > 1 && T * NH * HS >= 32768)
  for (i64 t = 0; t < T * NH; t++) {
    double s = 0;
    for (i64 d = 0; d < HS; d++) s += (double)dout[t * HS + d] * out[t * HS + d];
    D[t] = (float)s;
  }
  int failed = 0;
#pragma omp parallel if (nthr > 1 && ntask >= nthr) reduction(| : failed)
  {
    i64 cap = 0;
    char *qb = NULL, *kb = NULL, *vb = NULL, *ob = NULL;
    float* S = malloc(sizeof(float) * BR * BC);
    float* dP = malloc(sizeof(float) * BR * BC);
    char* pb = mode ? malloc(sizeof(float) * BR * BC) : NULL;
    double* m = malloc(sizeof(double) * BR);
    failed = !S || !dP || (mode && !pb) || !m;
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < ntask; task++) {
      const i64 s = task / NKV, g = task % NKV;
      const i64 s0 = cu[s], len = cu[s + 1] - s0;
      if (len <= 0 || failed) continue;
      if (mode && len > cap) {
        cap = len;
        free(qb), free(kb), free(vb), free(ob);
        qb = malloc(cap * HS * 4), kb = malloc(cap * HS * 4), vb = malloc(cap * HS * 4), ob = malloc(cap * HS * 4);
        if (!qb || !kb || !vb || !ob) {
          failed = 1;
          continue;
        }
      }
      const opnd K = prep(mode, k + s0 * ldk + g * HS, len, HS, ldk, kb);
      const opnd V = prep(mode, v + s0 * ldk + g * HS, len, HS, ldk, vb);
      float* dkg = dk + s0 * ldk + g * HS;
      float* dvg = dv + s0 * ldk + g * HS;
      for (i64 h = g * G; h < (g + 1) * G; h++) {
        const opnd Q = prep(mode, q + s0 * ldq + h * HS, len, HS, ldq, qb);
        const opnd dO = prep(mode, dout + s0 * ldq + h * HS, len, HS, ldq, ob);
        float* dqh = dq + s0 * ldq + h * HS;
        for (i64 i0 = 0; i0 < len; i0 += BR) {
          const i64 br = imin(BR, len - i0), jEnd = causal ? i0 + br : len;
          for (i64 r = 0; r < br; r++) m[r] = lse[(s0 + i0 + r) * NH + h];
          for (i64 j0 = 0; j0 < jEnd; j0 += BC) {
            const i64 bc = imin(BC, jEnd - j0);
            mm(mode, 0, 1, br, bc, HS, scale, at(Q, i0), Q.ld, at(K, j0), K.ld, 0, S, bc);
            vt_attn_bwd_block(S, dP, m, D, 0, br, bc, i0, j0, causal, 0); // S is now P
            const opnd P = prep(mode, S, br, bc, bc, pb);
            mm(mode, 1, 0, bc, HS, br, 1, P.p, P.ld, at(dO, i0), dO.ld, 1, dvg + j0 * ldk, ldk); // dV += P^T dO
            mm(mode, 0, 1, br, bc, HS, 1, at(dO, i0), dO.ld, at(V, j0), V.ld, 0, dP, bc);        // dP = dO V^T
            vt_attn_bwd_block(S, dP, m, D + (s0 + i0) * NH + h, NH, br, bc, i0, j0, 0, 1);      // dP is now dS
            const opnd dS = prep(mode, dP, br, bc, bc, pb);
            mm(mode, 0, 0, br, HS, bc, scale, dS.p, dS.ld, at(K, j0), K.ld, 1, dqh + i0 * ldq, ldq); // dQ += scale dS K
            mm(mode, 1, 0, bc, HS, br, scale, dS.p, dS.ld, at(Q, i0), Q.ld, 1, dkg + j0 * ldk, ldk); // dK += scale dS^T Q
          }
        }
      }
    }
    free(qb), free(kb), free(vb), free(ob), free(S), free(dP), free(pb), free(m);
  }
  return failed;
}
