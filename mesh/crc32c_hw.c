// CRC32C with the SSE4.2 crc32 instruction, compiled at load time by Bun's built-in TinyCC
// (bun:ffi cc; mesh/crc32c.ts). TinyCC's assembler lacks the crc32 mnemonic, so the
// instructions are written as bytes. Three interleaved streams hide the instruction's
// 3-cycle latency; their CRCs are combined with "shift by L zero bytes" tables (x^(8L) mod P,
// computed at init with the same instruction). All register values here are un-inverted.
#include <stdint.h>

#define L 4096 // bytes per stream per block; the asm displacements below encode L and 2L
static uint32_t shiftT[4][256];
static int ready = 0;

// crc <- crc over n/8 qwords at p (single chain).
static uint64_t crc_q(uint64_t c, const uint8_t *p, uint64_t q) {
  if (q) {
    __asm__ volatile(
      "1:\n"
      ".byte 0xf2, 0x48, 0x0f, 0x38, 0xf1, 0x06\n" // crc32q (%rsi), %rax
      "add $8, %%rsi\n"
      "dec %%rcx\n"
      "jnz 1b\n"
      : "+a"(c), "+S"(p), "+c"(q) : : "memory", "cc");
  }
  return c;
}

static uint32_t crc_b(uint32_t c, const uint8_t *p, uint64_t n) {
  while (n--) {
    uint32_t b = *p++;
    __asm__(".byte 0xf2, 0x0f, 0x38, 0xf0, 0xc2" : "+a"(c) : "d"(b)); // crc32b %dl, %eax
  }
  return c;
}

static uint32_t shift(uint32_t c) {
  return shiftT[0][c & 0xff] ^ shiftT[1][(c >> 8) & 0xff] ^ shiftT[2][(c >> 16) & 0xff] ^ shiftT[3][c >> 24];
}

static void init(void) {
  static uint8_t zeros[L];
  for (int k = 0; k < 4; k++)
    for (int b = 0; b < 256; b++) shiftT[k][b] = (uint32_t)crc_q((uint64_t)b << (8 * k), zeros, L / 8);
  ready = 1;
}

// Standard CRC32C (init ~0, final ~) continued from `crc` over p[0, n).
uint32_t crc32c_hw(const uint8_t *p, uint64_t n, uint32_t crc) {
  if (!ready) init();
  uint32_t c = ~crc;
  while (n && ((uintptr_t)p & 7)) { c = crc_b(c, p, 1); p++; n--; }
  while (n >= 3 * L) {
    uint64_t c0 = c, c1 = 0, c2 = 0, q = L / 8;
    __asm__ volatile(
      "1:\n"
      ".byte 0xf2, 0x48, 0x0f, 0x38, 0xf1, 0x06\n"                         // crc32q (%rsi), %rax
      ".byte 0xf2, 0x48, 0x0f, 0x38, 0xf1, 0x96, 0x00, 0x10, 0x00, 0x00\n" // crc32q 4096(%rsi), %rdx
      ".byte 0xf2, 0x48, 0x0f, 0x38, 0xf1, 0xbe, 0x00, 0x20, 0x00, 0x00\n" // crc32q 8192(%rsi), %rdi
      "add $8, %%rsi\n"
      "dec %%rcx\n"
      "jnz 1b\n"
      : "+a"(c0), "+d"(c1), "+D"(c2), "+S"(p), "+c"(q) : : "memory", "cc");
    p += 2 * L;
    n -= 3 * L;
    c = shift(shift((uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
  }
  c = (uint32_t)crc_q(c, p, n >> 3);
  p += n & ~(uint64_t)7;
  c = crc_b(c, p, n & 7);
  return ~c;
}
