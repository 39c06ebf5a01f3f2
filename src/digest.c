/*
 * digest.c - the two digests of the format: XXH3-64 (libxxhash) for key
 * hashes and CRC-32 IEEE reflected (ISA-L crc32_gzip_refl, same values as
 * zlib's crc32) for payload checksums.
 */
#include <isa-l/crc.h>
#include <xxhash.h>

#include "format.h"
#include "internal.h"

uint32_t simdr__crc32(uint32_t crc, const void *buf, uint64_t len) {
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
