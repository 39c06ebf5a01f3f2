/*
 * digest.c - the two digests of the format: XXH3-64 (xxHash, compiled in
 * from its header so short keys hash without a call into the shared
 * library) for key hashes and CRC-32 IEEE reflected (same values as zlib's
 * crc32) for payload checksums.
 *
 * CRC-32 uses ISA-L (crc32_gzip_refl, carry-less multiply), except up to
 * 32 bytes, where ISA-L's call and setup cost more than the CRC
 * (docs/BENCHMARKS.md, "CRC-32 of short values") and 8-byte values are the
 * common case of batched puts: those are computed in line (crc_short.h).
 * Both compute the same polynomial with the same chaining convention, so
 * the values are identical.
 */
#include <isa-l/crc.h>
#include <stdlib.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "crc_short.h"
#include "format.h"
#include "internal.h"

uint32_t simdr__crc32(uint32_t crc, const void *buf, uint64_t len) {
    if (len <= SIMDR__CRC_SHORT_MAX) return simdr__crc32_short(crc, buf, (size_t)len);
    /* crc32_gzip_refl takes and returns the finished (inverted) value, so it
     * chains across chunks exactly like zlib's crc32(). */
    return crc32_gzip_refl(crc, (const unsigned char *)buf, len);
}

uint64_t simdr__xxh3(const void *buf, size_t len) { return XXH3_64bits(buf, len); }

int simdr__xxh3_file(int fd, uint64_t off, uint64_t len, uint64_t *out) {
    enum { CHUNK = 256 * 1024 };
    uint8_t *buf = malloc(CHUNK);
    XXH3_state_t state;
    int ok = buf != NULL && XXH3_64bits_reset(&state) == XXH_OK;
    while (ok && len > 0) {
        size_t n = len < CHUNK ? (size_t)len : CHUNK;
        ok = simdr__pread_all(fd, buf, n, off) == 0 && XXH3_64bits_update(&state, buf, n) == XXH_OK;
        off += n;
        len -= n;
    }
    free(buf);
    if (!ok) return -1;
    *out = XXH3_64bits_digest(&state);
    return 0;
}

/* The state wants 64-byte alignment, which XXH3_createState provides. */
simdr__digest *simdr__digest_new(void) {
    XXH3_state_t *st = XXH3_createState();
    if (st && XXH3_64bits_reset(st) != XXH_OK) {
        XXH3_freeState(st);
        st = NULL;
    }
    return (simdr__digest *)st;
}

void simdr__digest_add(simdr__digest *d, const void *buf, size_t len) {
    if (len) XXH3_64bits_update((XXH3_state_t *)d, buf, len);
}

uint64_t simdr__digest_end(simdr__digest *d) {
    uint64_t h = XXH3_64bits_digest((XXH3_state_t *)d);
    XXH3_freeState((XXH3_state_t *)d);
    return h;
}

SIMDR_API uint64_t simdr_hash_key(const void *key, size_t key_len) {
    return XXH3_64bits(key_len ? key : "", key_len);
}

SIMDR_API void simdr_namespaced_key(const void *ns, size_t ns_len, const void *key,
                                    size_t key_len, uint8_t out[16]) {
    simdr__store_u64le(out, simdr_hash_key(ns, ns_len));
    simdr__store_u64le(out + 8, simdr_hash_key(key, key_len));
}
