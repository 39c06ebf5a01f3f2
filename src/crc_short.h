/*
 * crc_short.h - the format's CRC-32 of short byte strings (at most
 * SIMDR__CRC_SHORT_MAX bytes) without a call: the reads' inline check of a
 * short value (read.c) and simdr__crc32 below that length (digest.c), where
 * a call into ISA-L or zlib costs more than the CRC itself.
 *
 * The format's CRC is CRC-32/IEEE (zlib's), not the CRC-32C of SSE4.2's
 * crc32 instruction, so on x86-64 eight bytes at a time are folded with two
 * carry-less multiplications (PCLMULQDQ, checked at run time), a 4 to 7 byte
 * first piece as one shifted word; elsewhere, and for a first piece of 1 to
 * 3 bytes, zlib's byte table. Values are identical to zlib's crc32(), with
 * the same chaining: simdr__crc32_short(crc32(0, a, n), b, m) is the CRC of
 * a followed by b.
 */
#ifndef SIMDR_CRC_SHORT_H
#define SIMDR_CRC_SHORT_H

#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "format.h"

#define SIMDR__CRC_SHORT_MAX 32u

static inline uint32_t simdr__crc_bytes_table(uint32_t c, const uint8_t *p, size_t n) {
    const z_crc_t *t = get_crc_table();
    for (size_t i = 0; i < n; i++) c = (uint32_t)t[(c ^ p[i]) & 0xffu] ^ (c >> 8);
    return c;
}

static inline uint64_t simdr__load_le_upto8(const uint8_t *p, size_t n) {
    uint8_t b[8] = {0};
    memcpy(b, p, n);
    return simdr__load_u64le(b);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <emmintrin.h>
#define SIMDR__CRC_CLMUL 1
/* The CRC register after 8 more message bytes: w holds them (little
 * endian) with the register XORed into the first four. With the bytes as a
 * polynomial M of degree < 64 (bit-reflected, as the CRC is), the register
 * becomes (M x^32) mod P. Barrett reduction does that exactly in two
 * products: the quotient q = M + floor(M mu / x^64), mu being
 * floor(x^96 / P) less its x^64 term, and the remainder (q P_low) mod x^32.
 * Both constants are bit-reflected; mu is shifted left by one so the
 * reflected product of the first step lands in its low 64 bits. Assembly,
 * not intrinsics, so the library needs no target flags: the caller checks
 * that the processor has the instruction. */
static inline uint32_t simdr__crc_fold8(uint64_t w) {
    const __m128i k = _mm_set_epi64x(INT64_C(0x1db710640), (long long)UINT64_C(0xb4e5b025f7011640));
    __m128i x = _mm_cvtsi64_si128((long long)w);
    __m128i t = x;
    __asm__("pclmulqdq $0x00, %1, %0" : "+x"(t) : "x"(k)); /* M * mu */
    t = _mm_xor_si128(t, x);                                /* q in the low half */
    __asm__("pclmulqdq $0x10, %1, %0" : "+x"(t) : "x"(k)); /* q * P */
    return (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(t, 8));
}

/* zlib's crc32(0, p, 8): the commonest value size, in one fold (the caller
 * has checked that the processor has PCLMULQDQ). */
static inline uint32_t simdr__crc32_8_clmul(const uint8_t *p) {
    return ~simdr__crc_fold8(simdr__load_u64le(p) ^ 0xffffffffu);
}
#endif

/* zlib's crc32(crc, p, n) for n <= SIMDR__CRC_SHORT_MAX. */
static inline uint32_t simdr__crc32_short(uint32_t crc, const uint8_t *p, size_t n) {
    uint32_t c = ~crc;
#ifdef SIMDR__CRC_CLMUL
    if (__builtin_expect(__builtin_cpu_supports("pclmul"), 1)) {
        size_t head = n & 7;
        if (head >= 4) {
            /* The first piece as a whole word with zero bytes before it: with
             * the register XORed into the piece's first four bytes, leading
             * zeros leave the register at zero until the piece begins. */
            c = simdr__crc_fold8((simdr__load_le_upto8(p, head) ^ c) << (64 - 8 * head));
        } else if (head) {
            c = simdr__crc_bytes_table(c, p, head);
        }
        for (p += head, n -= head; n; p += 8, n -= 8)
            c = simdr__crc_fold8(simdr__load_u64le(p) ^ c);
        return ~c;
    }
#endif
    return ~simdr__crc_bytes_table(c, p, n);
}

#endif
