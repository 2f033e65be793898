// Inline helpers shared by the native sources (vec.c, attn.c): exp and the bf16 rounding.
#ifndef VT_MATH_H
#define VT_MATH_H
#include <stdint.h>

static inline float vt_exp(float x) {
  // exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 (ln2 split in hi + lo: exact product)
  x = x < -87.33f ? -87.33f : (x > 88.3f ? 88.3f : x);
  // n = round to nearest even of x / ln2 by the 1.5 * 2^23 trick (|x / ln2| < 2^22 here): unlike
  // __builtin_roundevenf, gcc 12 vectorises it
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.42860682030941723212e-6f;
  float p = 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  union { float f; int32_t i; } s;
  s.i = ((int32_t)n + 127) << 23;
  return p * s.f;
}

// Exp for callers that need exact 0 below f32's range (softmax of masked or very negative logits).
static inline float vt_exp0(float x) { return x < -87.33f ? 0.0f : vt_exp(x); }

// bf16 = the top 16 bits of an f32. Round to nearest, ties to even, in integer arithmetic (the same
// bits as AVX512-BF16's vcvtneps2bf16 for normal numbers, on every CPU); NaN stays a quiet NaN.
static inline uint32_t vt_bf16_bits(float x) {
  union { float f; uint32_t u; } v = {x};
  uint32_t u = v.u;
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u;
  return ((u & 0x7fffffffu) > 0x7f800000u) ? nan : rounded;
}

#endif
