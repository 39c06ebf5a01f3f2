/*
 * format.h - on-disk constants of the simd-r-drive file format and the
 * (de)serialisation of its 20-byte entry metadata. Depends on nothing else in
 * the library; docs/FORMAT.md is the byte-exact description.
 */
#ifndef SIMDR_FORMAT_H
#define SIMDR_FORMAT_H

#include <stdint.h>
#include <string.h>

#define SIMDR__META_SIZE 20u
#define SIMDR__ALIGN 64u
#define SIMDR__TOMBSTONE_BYTE 0x00u
/* The index packs an offset in 47 bits; files beyond 128 TiB are refused. */
#define SIMDR__MAX_OFFSET ((UINT64_C(1) << 47) - 1)

typedef struct simdr__meta {
    uint64_t key_hash;
    uint64_t prev;      /* prev_offset: the file length before this entry */
    uint32_t checksum;  /* CRC-32 (IEEE, reflected) of the payload */
} simdr__meta;

static inline uint64_t simdr__load_u64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t simdr__load_u32le(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline void simdr__store_u64le(uint8_t *p, uint64_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

static inline void simdr__store_u32le(uint8_t *p, uint32_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

/* 1 when the n bytes at p are all zero (padding, zeroed metadata), read a
 * word at a time. */
static inline int simdr__all_zero(const uint8_t *p, uint64_t n) {
    uint64_t acc = 0, i = 0;
    for (; i + 8 <= n; i += 8) acc |= simdr__load_u64le(p + i);
    for (; i < n; i++) acc |= p[i];
    return acc == 0;
}

/* SIMDR__ALIGN zero bytes: the source of every padding write (append.c). */
extern const uint8_t simdr__zero_pad[SIMDR__ALIGN];

static inline simdr__meta simdr__meta_decode(const uint8_t *p) {
    simdr__meta m;
    m.key_hash = simdr__load_u64le(p);
    m.prev = simdr__load_u64le(p + 8);
    m.checksum = simdr__load_u32le(p + 16);
    return m;
}

static inline void simdr__meta_encode(uint8_t *p, const simdr__meta *m) {
    simdr__store_u64le(p, m->key_hash);
    simdr__store_u64le(p + 8, m->prev);
    simdr__store_u32le(p + 16, m->checksum);
}

/* Zero bytes placed before a regular payload that would start at prev_tail. */
static inline uint64_t simdr__pad_for(uint64_t prev_tail, int aligned) {
    return aligned ? ((SIMDR__ALIGN - prev_tail % SIMDR__ALIGN) & (SIMDR__ALIGN - 1)) : 0;
}

/* A tombstone is exactly one 0x00 payload byte directly at prev_tail. */
static inline int simdr__is_tombstone_at(const uint8_t *base, uint64_t prev, uint64_t meta_off) {
    return meta_off - prev == 1 && base[prev] == SIMDR__TOMBSTONE_BYTE;
}

uint32_t simdr__crc32(uint32_t crc, const void *buf, uint64_t len);
uint64_t simdr__xxh3(const void *buf, size_t len);
/* XXH3-64 of the file's bytes [off, off + len), read with pread: 0, or -1
 * when they cannot be read. */
int simdr__xxh3_file(int fd, uint64_t off, uint64_t len, uint64_t *out);

#endif
