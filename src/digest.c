/*
 * digest.c - the two digests of the format: XXH3-64 (xxHash, compiled in
 * from its header so short keys hash without a call into the shared
 * library) for key hashes and CRC-32 IEEE reflected (same values as zlib's
 * crc32) for payload checksums.
 *
 * CRC-32 of long payloads uses ISA-L (crc32_gzip_refl, carry-less multiply).
 * Its setup costs more than the whole sum of a short value, and short values
 * are the common case of batched puts, so those go through slice-by-8 tables
 * instead; both compute the same polynomial, so the values are identical.
 */
#include <isa-l/crc.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "format.h"
#include "internal.h"

/* Below this length the table loop beats ISA-L's call and setup. */
#define SHORT_CRC_MAX 64u
#define CRC32_REFLECTED_POLY UINT32_C(0xedb88320)

static uint32_t crc_table[8][256];

__attribute__((constructor)) static void crc_table_init(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (CRC32_REFLECTED_POLY & (0u - (c & 1u)));
        crc_table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int t = 1; t < 8; t++)
            crc_table[t][b] = (crc_table[t - 1][b] >> 8) ^ crc_table[0][crc_table[t - 1][b] & 0xff];
}

static uint32_t crc32_short(uint32_t crc, const uint8_t *p, uint64_t len) {
    uint32_t c = ~crc;
    while (len >= 8) {
        uint32_t lo = c ^ simdr__load_u32le(p), hi = simdr__load_u32le(p + 4);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
            crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

uint32_t simdr__crc32(uint32_t crc, const void *buf, uint64_t len) {
    if (len < SHORT_CRC_MAX) return crc32_short(crc, (const uint8_t *)buf, len);
    /* crc32_gzip_refl takes and returns the finished (inverted) value, so it
     * chains across chunks exactly like zlib's crc32(). */
    return crc32_gzip_refl(crc, (const unsigned char *)buf, len);
}

uint64_t simdr__xxh3(const void *buf, size_t len) { return XXH3_64bits(buf, len); }

SIMDR_API uint64_t simdr_hash_key(const void *key, size_t key_len) {
    return XXH3_64bits(key_len ? key : "", key_len);
}

SIMDR_API void simdr_namespaced_key(const void *ns, size_t ns_len, const void *key,
                                    size_t key_len, uint8_t out[16]) {
    simdr__store_u64le(out, simdr_hash_key(ns, ns_len));
    simdr__store_u64le(out + 8, simdr_hash_key(key, key_len));
}
