/*
 * recover.c - finding the valid chain of a store file at open.
 *
 * A sound file's last 20 bytes are the newest metadata, and prev_offset links
 * lead strictly downwards to 0. The fast path walks that chain once (time
 * linear in the file size) reading the file through a buffer, verifies the
 * CRC-32 of the newest entry, so a torn payload behind a complete metadata
 * block is caught too, and of every entry, so a damaged link that still
 * forms a chain but skips entries is caught as damage; the same walk
 * records what the index needs, so the open builds it without another pass.
 *
 * When that fails, candidate end positions are tried from the end downwards.
 * A candidate must (a) chain structurally to the true first entry (the lowest
 * position linking to 0 with a matching checksum, found once) - memoised, so
 * every position is walked at most once overall - and (b) pass the CRC check
 * of its newest entries; an all-zero metadata block is never a candidate (a
 * zero-filled torn tail would otherwise pose as one giant first entry). CRC work is budgeted linearly in
 * the file size; a file that exhausts it is reported, not cut.
 *
 * The result is classified so the store never cuts what it cannot identify:
 * - TORN: the newest "entry" at the end is itself invalid (a torn append or
 *   garbage after the end): the valid prefix is kept, the rest may be cut.
 *   A run of zeros ending the file is no entry: the newest entry is the one
 *   ending where it starts.
 * - DAMAGED: the newest entry is valid but the chain behind it breaks (damage
 *   in the middle): nothing is cut; writable opens refuse.
 * - NOTSTORE: no valid prefix at all: nothing is cut.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <zlib.h>

#include "hashtab.h"
#include "internal.h"

#define TAIL_WINDOW (UINT64_C(1) << 20)
/* The hint path only runs on a file whose size, newest metadata and mtime
 * match what a clean close recorded (hint.c), so its CRC check is a second
 * line against write-back lost under that record, which hits the last pages
 * written: a shorter window keeps that check small beside the open. */
#define HINT_TAIL_WINDOW (UINT64_C(64) << 10)
#define TOMBSTONE_CRC UINT32_C(0xd202ef8d)

/* The CRC check of an entry whose bytes [prev, prev + span) start at entry
 * (from the map or from a read buffer). */
static int entry_bytes_crc_ok(const uint8_t *entry, uint64_t prev, uint64_t span, uint32_t crc,
                              int *layout) {
    if (span == 1 && entry[0] == SIMDR__TOMBSTONE_BYTE) return crc == TOMBSTONE_CRC;
    uint64_t pad = simdr__pad_for(prev, 1);
    if (pad == 0 || *layout == SIMDR_LAYOUT_UNALIGNED) return simdr__crc32(0, entry, span) == crc;
    int aligned_ok = span > pad && simdr__all_zero(entry, pad) &&
                     simdr__crc32(0, entry + pad, span - pad) == crc;
    if (*layout == SIMDR_LAYOUT_ALIGNED64) return aligned_ok;
    /* Layout still unknown: this padded entry decides it. */
    if (aligned_ok) {
        *layout = SIMDR_LAYOUT_ALIGNED64;
        return 1;
    }
    if (simdr__crc32(0, entry, span) == crc) {
        *layout = SIMDR_LAYOUT_UNALIGNED;
        return 1;
    }
    return 0;
}

int simdr__entry_crc_ok(const uint8_t *base, uint64_t prev, uint64_t meta_off, uint32_t crc,
                        int *layout) {
    return entry_bytes_crc_ok(base + prev, prev, meta_off - prev, crc, layout);
}

/* entry_bytes_crc_ok's layout rules on the two readings' results. */
static int layout_decides(uint64_t pad, int whole_ok, int after_ok, int *layout) {
    if (pad == 0 || *layout == SIMDR_LAYOUT_UNALIGNED) return whole_ok;
    if (*layout == SIMDR_LAYOUT_ALIGNED64) return after_ok;
    if (after_ok) {
        *layout = SIMDR_LAYOUT_ALIGNED64;
        return 1;
    }
    if (whole_ok) {
        *layout = SIMDR_LAYOUT_UNALIGNED;
        return 1;
    }
    return 0;
}

/* The CRC check of the entry [prev, m) under entry_bytes_crc_ok's rules,
 * read with pread through buf (cap bytes, at least SIMDR__ALIGN) and never
 * through the map: 1 sound, 0 not, -1 when the file cannot be read. Both
 * readings of a padded entry (whole, and after its zero padding) come from
 * one pass over the bytes. */
static int entry_crc_ok_pread(int fd, uint64_t prev, uint64_t m, uint32_t crc, int *layout,
                              uint8_t *buf, uint64_t cap) {
    uint64_t span = m - prev;
    if (span == 1) {
        uint8_t b;
        if (simdr__pread_all(fd, &b, 1, prev) != 0) return -1;
        if (b == SIMDR__TOMBSTONE_BYTE) return crc == TOMBSTONE_CRC;
    }
    uint64_t pad = *layout == SIMDR_LAYOUT_UNALIGNED ? 0 : simdr__pad_for(prev, 1);
    int padded = pad && span > pad; /* a shorter span cannot be a padded entry */
    int need_whole = !padded || *layout != SIMDR_LAYOUT_ALIGNED64;
    uint32_t whole = 0, rest = 0;
    int pad_zero = 1;
    for (uint64_t at = prev; at < m;) {
        uint64_t len = m - at < cap ? m - at : cap;
        if (simdr__pread_all(fd, buf, (size_t)len, at) != 0) return -1;
        if (need_whole) whole = simdr__crc32(whole, buf, len);
        if (padded) {
            uint64_t skip = at == prev ? pad : 0;
            if (skip) pad_zero = simdr__all_zero(buf, skip);
            rest = simdr__crc32(rest, buf + skip, len - skip);
        }
        at += len;
    }
    return layout_decides(pad, need_whole && whole == crc, padded && pad_zero && rest == crc,
                          layout);
}

/* Entries larger than this are CRC-checked with pread through a bounded
 * buffer instead of through the map: an open must not leave a large newest
 * entry's pages in the process (pread leaves them in the page cache only). */
#define MAPPED_CRC_MAX (UINT64_C(1) << 20)

/* simdr__entry_crc_ok for an entry of any size, reading a large one with
 * pread from fd (-1, or a file that cannot be read: through the map). */
static int entry_crc_ok_fd(int fd, const uint8_t *base, uint64_t prev, uint64_t m, uint32_t crc,
                           int *layout) {
    if (m - prev > MAPPED_CRC_MAX && fd >= 0) {
        uint8_t *buf = malloc(MAPPED_CRC_MAX);
        int ok = buf ? entry_crc_ok_pread(fd, prev, m, crc, layout, buf, MAPPED_CRC_MAX) : -1;
        free(buf);
        if (ok >= 0) return ok;
    }
    return simdr__entry_crc_ok(base, prev, m, crc, layout);
}

/* One structural step back from end position p: the previous end, or
 * UINT64_MAX if p cannot end an entry. */
static uint64_t step_back(const uint8_t *base, uint64_t p) {
    if (p < SIMDR__META_SIZE + 1) return UINT64_MAX;
    uint64_t m = p - SIMDR__META_SIZE;
    uint64_t prev = simdr__load_u64le(base + m + 8);
    return prev < m ? prev : UINT64_MAX;
}

static int meta_all_zero(const uint8_t *base, uint64_t p) {
    return simdr__all_zero(base + p - SIMDR__META_SIZE, SIMDR__META_SIZE);
}

/* CRC-checks the newest entries of the chain ending at end: the newest one
 * whole, and all that end within TAIL_WINDOW of end. A candidate prefix in
 * a repair must pass this stricter test, so the cut lands before any torn
 * data of the last appends. The chain must already be
 * known structurally sound. *budget is decreased by the bytes hashed. */
static int tail_crcs_ok(int fd, const uint8_t *base, uint64_t end, uint64_t window, int *layout,
                        uint64_t *budget) {
    uint64_t p = end;
    int first = 1;
    while (p != 0 && (first || p + window > end)) {
        if (p < SIMDR__META_SIZE + 1) return 0;
        uint64_t m = p - SIMDR__META_SIZE;
        simdr__meta meta = simdr__meta_decode(base + m);
        /* Callers on the hint path have not walked the chain: check the link. */
        if (meta.prev >= m) return 0;
        uint64_t span = m - meta.prev;
        if (*budget < span) return -1;
        *budget -= span;
        if (!entry_crc_ok_fd(fd, base, meta.prev, m, meta.checksum, layout)) return 0;
        p = meta.prev;
        first = 0;
    }
    return 1;
}

/* Walks the whole chain structurally; returns 1 if it reaches 0. Detects the
 * layout from the first padded regular entry met (newest first). */
static int chain_sound(const uint8_t *base, uint64_t end, int *layout) {
    uint64_t p = end;
    while (p != 0) {
        simdr__prefetch_behind(base, p);
        uint64_t prev = step_back(base, p);
        if (prev == UINT64_MAX) return 0;
        if (*layout < 0 && simdr__pad_for(prev, 1) != 0) {
            uint64_t m = p - SIMDR__META_SIZE;
            if (!simdr__is_tombstone_at(base, prev, m)) {
                int probe = -1;
                if (simdr__entry_crc_ok(base, prev, m, simdr__load_u32le(base + m + 16), &probe))
                    *layout = probe;
            }
        }
        p = prev;
    }
    return 1;
}

/* Is the entry [prev, m) with a bad checksum really a damaged link that
 * skips entries? Then some valid entry starting at the same prev ends inside
 * the span. Otherwise it is a damaged payload. Linear in the span, plus the
 * CRCs of look-alike links, charged to *budget (a hostile payload full of
 * them must not make the open quadratic): an exhausted budget counts as a
 * skip, so such a file is reported rather than served. */
static int span_hides_entry(const uint8_t *base, uint64_t prev, uint64_t m, int layout,
                            uint64_t *budget) {
    for (uint64_t q = prev + SIMDR__META_SIZE + 1; q <= m; q++) {
        const uint8_t *mq = base + q - SIMDR__META_SIZE;
        if (simdr__load_u64le(mq + 8) != prev) continue;
        uint64_t span = q - SIMDR__META_SIZE - prev;
        if (*budget < span) return 1;
        *budget -= span;
        int probe = layout;
        if (simdr__entry_crc_ok(base, prev, q - SIMDR__META_SIZE, simdr__load_u32le(mq + 16),
                                &probe))
            return 1;
    }
    return 0;
}

/* ---- the fast path: one walk over a sound file, read backwards with pread
 * through a buffer (simdr__window), several times faster than a first walk
 * through the map on virtual machines ---- */
#define WINDOW_BYTES (UINT64_C(1) << 20)

/* What the walk keeps of each entry for the index, newest first: 16 bytes. */
typedef struct walk_record {
    uint64_t hash;
    uint64_t meta; /* metadata offset | SIMDR__IDX_TOMB for a tombstone */
} walk_record;

typedef struct walk_records {
    walk_record *rec; /* reserved for the most entries the file can hold */
    size_t bytes;
    uint64_t n;
    int failed; /* no memory: the caller builds the index itself */
} walk_records;

/* Address space for one record per possible entry, committed only as the
 * walk writes it, in huge pages where the kernel allows (a page fault per
 * 4 KiB of records costs more than the records). */
static void records_reserve(walk_records *wr, uint64_t file_size) {
    uint64_t most = file_size / (SIMDR__META_SIZE + 1) + 1;
    wr->n = 0;
    wr->bytes = (size_t)(most * sizeof(walk_record));
    void *p = simdr__io.mmap(NULL, wr->bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        wr->rec = NULL;
        wr->failed = 1;
        return;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, wr->bytes, MADV_HUGEPAGE);
#endif
    wr->rec = p;
    wr->failed = 0;
}

static void records_free(walk_records *wr) {
    if (wr->rec) munmap(wr->rec, wr->bytes);
    wr->rec = NULL;
}

static void record_entry(walk_records *wr, uint64_t hash, uint64_t meta, int tomb) {
    if (!wr->failed)
        wr->rec[wr->n++] = (walk_record){hash, meta | (tomb ? SIMDR__IDX_TOMB : 0)};
}

enum walk_result { WALK_SOUND, WALK_BROKEN, WALK_SKIP };

/* Walks the chain from end to 0 once: every link must lead strictly down
 * (else WALK_BROKEN: not a sound chain) and every entry's CRC is checked. A
 * checksum mismatch in a payload is left for simdr_check to report; a link
 * that skips entries makes the chain untrustworthy: WALK_SKIP with *at set to
 * the end of the entry holding it. With wr, each entry is recorded for the
 * index. The layout is detected by the first padded regular entry met. */
static int walk_chain(simdr__window *w, uint64_t end, int *layout, uint64_t *at, uint64_t *budget,
                      walk_records *wr, uint64_t *bad_crc_end) {
    for (uint64_t p = end; p != 0;) {
        if (p < SIMDR__META_SIZE + 1) return WALK_BROKEN;
        uint64_t m = p - SIMDR__META_SIZE;
        simdr__meta meta = simdr__meta_decode(simdr__window_span(w, m, p));
        if (meta.prev >= m) return WALK_BROKEN;
        int ok, tomb = 0;
        if (m - meta.prev > MAPPED_CRC_MAX) { /* not through the map: see entry_crc_ok_fd */
            ok = entry_crc_ok_fd(w->fd, w->base, meta.prev, m, meta.checksum, layout);
        } else {
            const uint8_t *entry = simdr__window_span(w, meta.prev, m);
            ok = entry_bytes_crc_ok(entry, meta.prev, m - meta.prev, meta.checksum, layout);
            tomb = m - meta.prev == 1 && entry[0] == SIMDR__TOMBSTONE_BYTE;
        }
        if (!ok && span_hides_entry(w->base, meta.prev, m, *layout, budget)) {
            *at = p;
            return WALK_SKIP;
        }
        if (!ok && !*bad_crc_end) *bad_crc_end = p;
        if (wr) record_entry(wr, meta.key_hash, m, tomb);
        p = meta.prev;
    }
    return WALK_SOUND;
}

/* Index of the recorded chain: newest first, so the first entry met of a
 * key is its newest. Each home slot is prefetched INSERT_AHEAD records early
 * so the random index writes overlap instead of stalling one by one. */
#define INSERT_AHEAD 16
static simdr__index *index_records(const uint8_t *base, const walk_records *wr, uint64_t *live) {
    simdr__index *ix = simdr__index_new(wr->n);
    if (!ix) return NULL;
    uint64_t n = 0;
    for (uint64_t i = 0; i < wr->n; i++) {
        if (i + INSERT_AHEAD < wr->n) simdr__index_prefetch(ix, wr->rec[i + INSERT_AHEAD].hash);
        const walk_record *r = &wr->rec[i];
        int tomb = (r->meta & SIMDR__IDX_TOMB) != 0;
        uint64_t m = r->meta & SIMDR__IDX_OFF_MASK;
        if (simdr__index_put_if_absent(ix, base, r->hash, simdr__index_value(r->hash, m, tomb)) &&
            !tomb)
            n++;
    }
    *live = n;
    return ix;
}

int simdr__build_index(const uint8_t *base, uint64_t end, simdr__index **out, uint64_t *live_out,
                       uint64_t *entries_out) {
    walk_records wr;
    records_reserve(&wr, end);
    if (wr.failed) return simdr__fail(SIMDR_ENOMEM, "out of memory building the index");
    for (uint64_t p = end; p != 0;) {
        simdr__prefetch_behind(base, p);
        uint64_t m = p - SIMDR__META_SIZE;
        uint64_t prev = simdr__load_u64le(base + m + 8);
        record_entry(&wr, simdr__load_u64le(base + m), m, simdr__is_tombstone_at(base, prev, m));
        p = prev;
    }
    uint64_t entries = wr.n;
    if (entries_out) *entries_out = entries;
    *out = index_records(base, &wr, live_out);
    records_free(&wr);
    if (!*out)
        return simdr__fail(SIMDR_ENOMEM, "out of memory for an index of %llu entries",
                           (unsigned long long)entries);
    return SIMDR_OK;
}

/* Damaged stores are served (salvage) only up to the start of the lowest
 * entry of the chain ending at end whose CRC fails, so every entry served
 * is sound and no payload bytes that look like metadata can pass for the
 * end of the prefix unless a whole chain from 0 agrees. The chain must be
 * known to reach 0. */
static uint64_t crc_sound_prefix(const uint8_t *base, uint64_t end, int layout) {
    uint64_t keep = end;
    for (uint64_t p = end; p != 0;) {
        simdr__prefetch_behind(base, p);
        uint64_t m = p - SIMDR__META_SIZE;
        simdr__meta meta = simdr__meta_decode(base + m);
        int probe = layout;
        if (!simdr__entry_crc_ok(base, meta.prev, m, meta.checksum, &probe)) keep = meta.prev;
        p = meta.prev;
    }
    return keep;
}

/* ---- memo of positions already classified (structurally reach 0 or not) ----
 * A table (hashtab.h) keyed by position + 1, valued 1 (reaches 0) or 2
 * (does not); grows at half full; positions are not random, so mixed. */
typedef simdr__u64table posmemo;

static void *memo_alloc(size_t bytes) { return calloc(1, bytes); }
static void memo_release(void *p, size_t bytes) {
    (void)bytes;
    free(p);
}

static void memo_init(posmemo *pm) {
    *pm = (posmemo){.load_num = 1, .load_den = 2, .mix = 1, .has_vals = 1,
                    .alloc = memo_alloc, .release = memo_release};
}

static int memo_get(const posmemo *pm, uint64_t pos) {
    if (pos == 0) return 1;
    uint8_t val;
    return simdr__u64table_get(pm, pos + 1, &val) ? val : 0;
}

static int memo_set(posmemo *pm, uint64_t pos, uint8_t val) {
    return simdr__u64table_put(pm, pos + 1, val) < 0 ? -1 : 0;
}

/* The ends of possible first entries: positions whose metadata (not all
 * zero) links to 0 with a checksum matching every byte before it, found in
 * one incremental CRC pass. Only these may link to 0: a zero run in a torn
 * tail or a zero pad reads as "prev = 0" and would otherwise pose as one
 * giant first entry (and cost a CRC of the whole file per look-alike). A
 * first payload may itself hold such a look-alike, so every one is kept, not
 * only the lowest. Ascending; NULL (n = 0) when there is none or no memory
 * (*failed then set). */
typedef struct first_ends {
    uint64_t *at;
    uint64_t n, cap;
    int failed;
} first_ends;

static void find_first_ends(const uint8_t *base, uint64_t size, first_ends *fe) {
    uint32_t crc = 0;
    uint64_t hashed = 0;
    fe->at = NULL;
    fe->n = fe->cap = 0;
    fe->failed = 0;
    for (uint64_t p = SIMDR__META_SIZE + 1; p <= size; p++) {
        uint64_t m = p - SIMDR__META_SIZE;
        if (simdr__load_u64le(base + m + 8) != 0 || meta_all_zero(base, p)) continue;
        crc = simdr__crc32(crc, base + hashed, m - hashed);
        hashed = m;
        if (crc != simdr__load_u32le(base + m + 16)) continue;
        if (fe->n == fe->cap) {
            uint64_t nc = fe->cap ? fe->cap * 2 : 16;
            uint64_t *na = realloc(fe->at, nc * sizeof *na);
            if (!na) {
                fe->failed = 1;
                return;
            }
            fe->at = na;
            fe->cap = nc;
        }
        fe->at[fe->n++] = p;
    }
}

static int is_first_end(const first_ends *fe, uint64_t p) {
    uint64_t lo = 0, hi = fe->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (fe->at[mid] < p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < fe->n && fe->at[lo] == p;
}

/* ---- the CRC of any span of the file, from checkpoints ----
 * A candidate end whose newest entry is long (a large value torn, or a
 * hostile payload full of links to one entry end) would cost a CRC of that
 * whole span per candidate: quadratic. Instead one pass stores the running
 * CRC of the file at every `step` bytes; the CRC of [a, b) then comes from
 * the running CRCs at a and b (each at most `step` bytes from a
 * checkpoint), since CRC(A || B) = shift(CRC(A), |B|) ^ CRC(B) - zlib's
 * crc32_combine with a zero second CRC is exactly that shift. */
#define CKPT_MIN_STEP 512u
#define CKPT_MAX_POINTS (UINT64_C(1) << 20)
#define DIRECT_CRC_SPAN (UINT64_C(4) << 10)

typedef struct crc_ckpt {
    uint32_t *at; /* at[i]: CRC of [0, i * step) */
    uint64_t step, n;
    int failed;   /* no memory: spans are hashed directly */
} crc_ckpt;

static void ckpt_build(const uint8_t *base, uint64_t size, crc_ckpt *c) {
    c->step = CKPT_MIN_STEP;
    while (size / c->step >= CKPT_MAX_POINTS) c->step *= 2;
    c->n = size / c->step + 1;
    c->at = malloc(c->n * sizeof *c->at);
    if (!c->at) {
        c->failed = 1;
        return;
    }
    uint32_t crc = 0;
    c->at[0] = 0;
    for (uint64_t i = 1; i < c->n; i++) {
        crc = simdr__crc32(crc, base + (i - 1) * c->step, c->step);
        c->at[i] = crc;
    }
}

/* Running CRC of [0, x). */
static uint32_t ckpt_running(const uint8_t *base, const crc_ckpt *c, uint64_t x) {
    uint64_t i = x / c->step;
    return simdr__crc32(c->at[i], base + i * c->step, x - i * c->step);
}

/* CRC of [a, b); builds the checkpoints on first need; charges *budget. */
static uint32_t span_crc(const uint8_t *base, uint64_t size, crc_ckpt *c, uint64_t a, uint64_t b,
                         uint64_t *budget) {
    uint64_t len = b - a;
    if (len > DIRECT_CRC_SPAN && !c->at && !c->failed) {
        ckpt_build(base, size, c);
        *budget = *budget > size ? *budget - size : 0;
    }
    if (len <= DIRECT_CRC_SPAN || c->failed) {
        *budget = *budget > len ? *budget - len : 0;
        return simdr__crc32(0, base + a, len);
    }
    uint64_t cost = 2 * c->step;
    *budget = *budget > cost ? *budget - cost : 0;
    uint32_t ra = ckpt_running(base, c, a), rb = ckpt_running(base, c, b);
    return rb ^ (uint32_t)crc32_combine64(ra, 0, (z_off64_t)len);
}

/* ---- all the entries that start at one offset, in one pass ----
 * The usual shape of many long candidates is many links to one entry end
 * (a payload repeating it): one forward pass from that offset, with running
 * CRCs, finds every end whose entry starting there has a matching CRC, and
 * answers all those candidates. Passes are charged to the budget and
 * limited in number; past either, spans come from the checkpoints. */
#define MAX_PASSES 64

typedef struct prev_pass {
    uint64_t prev, limit; /* entries starting at prev, ending at or below limit */
    uint64_t *ends;       /* ascending ends whose CRC matches ... */
    uint8_t *how;         /* ... 1: read from prev, 2: read after the pad */
    uint64_t n, cap;
} prev_pass;

typedef struct prev_passes {
    prev_pass pass[MAX_PASSES];
    int n;
    int failed;
} prev_passes;

static void passes_free(prev_passes *pp) {
    for (int i = 0; i < pp->n; i++) {
        free(pp->pass[i].ends);
        free(pp->pass[i].how);
    }
}

static int pass_add(prev_pass *ps, uint64_t end, uint8_t how) {
    if (ps->n == ps->cap) {
        uint64_t nc = ps->cap ? ps->cap * 2 : 64;
        uint64_t *ne = realloc(ps->ends, nc * sizeof *ne);
        if (!ne) return -1;
        ps->ends = ne;
        uint8_t *nh = realloc(ps->how, nc);
        if (!nh) return -1;
        ps->how = nh;
        ps->cap = nc;
    }
    ps->ends[ps->n] = end;
    ps->how[ps->n++] = how;
    return 0;
}

/* The pass for entries starting at prev up to limit: found, made (charged
 * to *budget), or NULL (budget, count or memory exhausted). */
static prev_pass *pass_for(const uint8_t *base, prev_passes *pp, uint64_t prev, uint64_t limit,
                           uint64_t *budget) {
    for (int i = 0; i < pp->n; i++)
        if (pp->pass[i].prev == prev && pp->pass[i].limit >= limit) return &pp->pass[i];
    if (pp->n == MAX_PASSES || pp->failed || *budget < limit - prev) return NULL;
    *budget -= limit - prev;
    prev_pass *ps = &pp->pass[pp->n];
    *ps = (prev_pass){prev, limit, NULL, NULL, 0, 0};
    uint64_t pad = simdr__pad_for(prev, 1);
    int pad_zero =
        pad && limit - prev > pad + SIMDR__META_SIZE && simdr__all_zero(base + prev, pad);
    uint32_t whole = 0, after = 0;
    uint64_t hw = prev, ha = prev + pad;
    for (uint64_t q = prev + SIMDR__META_SIZE + 1; q <= limit; q++) {
        uint64_t m = q - SIMDR__META_SIZE;
        if (simdr__load_u64le(base + m + 8) != prev || meta_all_zero(base, q)) continue;
        uint32_t crc = simdr__load_u32le(base + m + 16);
        whole = simdr__crc32(whole, base + hw, m - hw);
        hw = m;
        uint8_t how = whole == crc ? 1 : 0;
        if (pad_zero && m > prev + pad) {
            after = simdr__crc32(after, base + ha, m - ha);
            ha = m;
            if (after == crc) how |= 2;
        }
        if (how && pass_add(ps, q, how) != 0) {
            free(ps->ends);
            free(ps->how);
            pp->failed = 1;
            return NULL;
        }
    }
    pp->n++;
    return ps;
}

/* How the entry ending at end checks in pass ps: its `how` bits, 0 if not
 * among the matching ends. */
static uint8_t pass_how(const prev_pass *ps, uint64_t end) {
    uint64_t lo = 0, hi = ps->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (ps->ends[mid] < end)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ps->n && ps->ends[lo] == end ? ps->how[lo] : 0;
}

/* The CRC check of the entry [prev, m) (entry_bytes_crc_ok's rules): short
 * spans directly, long ones from a pass over all entries starting at prev,
 * else from the checkpoints. */
static int entry_crc_ok_ckpt(const uint8_t *base, uint64_t size, crc_ckpt *c, prev_passes *pp,
                             uint64_t prev, uint64_t m, uint32_t crc, int *layout,
                             uint64_t *budget) {
    uint64_t span = m - prev;
    if (span <= DIRECT_CRC_SPAN) {
        *budget = *budget > span ? *budget - span : 0;
        return simdr__entry_crc_ok(base, prev, m, crc, layout);
    }
    uint64_t pad = simdr__pad_for(prev, 1);
    prev_pass *ps = pp ? pass_for(base, pp, prev, m + SIMDR__META_SIZE, budget) : NULL;
    if (ps) {
        uint8_t how = pass_how(ps, m + SIMDR__META_SIZE);
        return layout_decides(pad, (how & 1) != 0, (how & 2) != 0, layout);
    }
    if (pad == 0 || *layout == SIMDR_LAYOUT_UNALIGNED)
        return span_crc(base, size, c, prev, m, budget) == crc;
    int aligned_ok = simdr__all_zero(base + prev, pad) &&
                     span_crc(base, size, c, prev + pad, m, budget) == crc;
    if (*layout == SIMDR_LAYOUT_ALIGNED64) return aligned_ok;
    if (aligned_ok) {
        *layout = SIMDR_LAYOUT_ALIGNED64;
        return 1;
    }
    if (span_crc(base, size, c, prev, m, budget) == crc) {
        *layout = SIMDR_LAYOUT_UNALIGNED;
        return 1;
    }
    return 0;
}

/* ---- the older entries of a candidate ----
 * A candidate must also have sound CRCs in every older entry ending within
 * TAIL_WINDOW of it. Many candidates share one older entry end (all the
 * links of a hostile payload to one entry end): for each such end the walk
 * down the window is kept and resumed, never redone. */
typedef struct older_walk {
    uint64_t key;      /* entry end + 1; 0 = empty slot */
    uint64_t frontier; /* end of the next entry not yet checked (0: reached the start) */
    uint64_t bad_at;   /* end of the first entry found unsound, 0 if none */
} older_walk;

typedef struct older_walks {
    older_walk *slot;
    uint64_t cap, used;
} older_walks;

static older_walk *older_find(older_walks *ow, uint64_t end) {
    if ((ow->used + 1) * 2 > ow->cap) {
        older_walks bigger = {NULL, ow->cap ? ow->cap * 2 : 256, ow->used};
        bigger.slot = calloc(bigger.cap, sizeof *bigger.slot);
        if (!bigger.slot) return NULL;
        for (uint64_t i = 0; i < ow->cap; i++) {
            if (!ow->slot[i].key) continue;
            uint64_t j = (ow->slot[i].key * UINT64_C(0x9E3779B97F4A7C15)) & (bigger.cap - 1);
            while (bigger.slot[j].key) j = (j + 1) & (bigger.cap - 1);
            bigger.slot[j] = ow->slot[i];
        }
        free(ow->slot);
        *ow = bigger;
    }
    uint64_t j = ((end + 1) * UINT64_C(0x9E3779B97F4A7C15)) & (ow->cap - 1);
    while (ow->slot[j].key && ow->slot[j].key != end + 1) j = (j + 1) & (ow->cap - 1);
    if (!ow->slot[j].key) {
        ow->slot[j] = (older_walk){end + 1, end, 0};
        ow->used++;
    }
    return &ow->slot[j];
}

/* 1 when every entry of the (structurally sound) chain below and at `end`
 * that ends after `bound` has a sound CRC; 0 if not; -1 without memory. */
static int older_ok(const uint8_t *base, uint64_t size, crc_ckpt *c, older_walks *ow,
                    uint64_t end, uint64_t bound, int *layout, uint64_t *budget) {
    older_walk *w = older_find(ow, end);
    if (!w) return -1;
    while (!w->bad_at && w->frontier > bound && w->frontier != 0) {
        uint64_t q = w->frontier, m = q - SIMDR__META_SIZE;
        uint64_t prev = simdr__load_u64le(base + m + 8);
        if (!entry_crc_ok_ckpt(base, size, c, NULL, prev, m, simdr__load_u32le(base + m + 16),
                               layout, budget)) {
            w->bad_at = q;
            break;
        }
        w->frontier = prev;
    }
    return !(w->bad_at && w->bad_at > bound);
}

/* Does the chain from p reach 0 through a first entry (one of fe)?
 * Memoised with path compression, so each position is walked once across
 * all candidates. -1 on allocation failure. */
static int reaches_zero(const uint8_t *base, uint64_t p, const first_ends *fe, posmemo *pm,
                        uint64_t **path, uint64_t *path_cap) {
    uint64_t n = 0, q = p;
    int result;
    for (;;) {
        int known = memo_get(pm, q);
        if (known) {
            result = known;
            break;
        }
        uint64_t prev = step_back(base, q);
        if (prev == UINT64_MAX || (prev == 0 && !is_first_end(fe, q))) {
            result = 2;
            if (memo_set(pm, q, 2) != 0) return -1;
            break;
        }
        if (n == *path_cap) {
            uint64_t nc = *path_cap ? *path_cap * 2 : 256;
            uint64_t *np = realloc(*path, nc * sizeof *np);
            if (!np) return -1;
            *path = np;
            *path_cap = nc;
        }
        (*path)[n++] = q;
        q = prev;
    }
    for (uint64_t i = 0; i < n; i++)
        if (memo_set(pm, (*path)[i], (uint8_t)result) != 0) return -1;
    return result == 1;
}

/* The end of [from, size) without its trailing zero bytes. */
static uint64_t end_before_zero_run(const uint8_t *base, uint64_t from, uint64_t size) {
    const uint64_t probe = 4096;
    uint64_t end = size;
    while (end - from >= probe && simdr__all_zero(base + end - probe, probe)) end -= probe;
    while (end > from && base[end - 1] == 0) end--;
    return end;
}

/* Is the entry ending at end (past the sound prefix ending at best) valid,
 * so that the bytes between best and it are data behind a break? (See the
 * classification at the end of simdr__recover.) */
static int valid_behind_break(const uint8_t *base, uint64_t end, uint64_t best, int layout) {
    uint64_t prev = step_back(base, end);
    if (prev == UINT64_MAX || meta_all_zero(base, end)) return 0;
    uint64_t m = end - SIMDR__META_SIZE;
    uint32_t crc = simdr__load_u32le(base + m + 16);
    int probe = layout, on_prefix = layout;
    return simdr__entry_crc_ok(base, prev, m, crc, &probe) &&
           !(prev != best && simdr__entry_crc_ok(base, best, m, crc, &on_prefix));
}

int simdr__recover(const uint8_t *base, uint64_t size, int fd, simdr__recover_result *r) {
    r->index = NULL;
    r->live = 0;
    r->entries = 0;
    r->status = SIMDR__RECOVER_SOUND;
    r->valid_len = size;
    r->layout = -1;
    r->damage_at = 0;
    r->bad_crc_end = 0;
    if (size == 0) return SIMDR_OK;

    uint64_t budget = 2 * size + (UINT64_C(64) << 20);
    /* A torn append always leaves the newest entry invalid, so the fast
     * path needs it intact; then, with the chain sound, a checksum mismatch
     * further back is damage to report (simdr_check, simdr_entry_verify), not
     * a tail to cut. */
    int layout = -1;
    uint64_t limit = size;   /* candidate prefixes end at or below it */
    uint64_t skip_end = 0;   /* end of an entry whose link skips entries */
    uint64_t newest_prev = step_back(base, size);
    if (newest_prev != UINT64_MAX &&
        entry_crc_ok_fd(fd, base, newest_prev, size - SIMDR__META_SIZE,
                        simdr__load_u32le(base + size - 4), &layout)) {
        simdr__window w = {fd, base, size, 1, fd >= 0 ? malloc(WINDOW_BYTES) : NULL, WINDOW_BYTES,
                           0, 0};
        walk_records wr;
        records_reserve(&wr, size);
        uint64_t skip_at = 0;
        int walked = walk_chain(&w, size, &layout, &skip_at, &budget, wr.failed ? NULL : &wr,
                                &r->bad_crc_end);
        free(w.buf);
        if (walked == WALK_SKIP) {
            /* Damage, if the rest of the chain is sound (else the slow path
             * sorts it out): the entries below the one holding the link are
             * untouched, and the slow path finds the sound prefix among them
             * (a run of zeros reads as links to 0 and lands here). */
            int probe = layout;
            if (chain_sound(base, skip_at, &probe)) {
                skip_end = skip_at;
                limit = skip_at > 2 * SIMDR__META_SIZE ? skip_at - SIMDR__META_SIZE - 1 : 0;
            }
        } else if (walked == WALK_SOUND) {
            r->layout = layout;
            /* Without memory for the index here the caller builds it (and
             * reports the shortage). */
            if (!wr.failed) {
                r->index = index_records(base, &wr, &r->live);
                r->entries = wr.n;
            }
            records_free(&wr);
            return SIMDR_OK;
        }
        records_free(&wr);
        if (!skip_end) layout = -1;
    }

    /* Slow path: the longest prefix that chains to 0 with sound tail CRCs. */
    posmemo pm;
    memo_init(&pm);
    uint64_t *path = NULL, path_cap = 0;
    uint64_t best = 0;
    int cand_layout = layout;
    first_ends fe;
    find_first_ends(base, size, &fe);
    crc_ckpt ckpt = {NULL, 0, 0, 0};
    older_walks ow = {NULL, 0, 0};
    prev_passes *pp = calloc(1, sizeof *pp); /* NULL: checkpoints only */
    int nomem = fe.failed;
    for (uint64_t p = limit; p >= SIMDR__META_SIZE + 1 && !nomem; p--) {
        uint64_t prev = step_back(base, p);
        if (prev == UINT64_MAX || meta_all_zero(base, p)) continue;
        int reach = fe.n ? reaches_zero(base, p, &fe, &pm, &path, &path_cap) : 0;
        nomem = reach < 0;
        if (reach <= 0) continue;
        if (!reach) continue;
        /* The newest entry whole, then (within the budget) the older ones
         * ending within TAIL_WINDOW. A file whose look-alike candidates use
         * up the budget is still answered: from then on a candidate needs
         * only its newest entry sound, which costs a bounded amount. */
        int probe = layout;
        uint64_t m = p - SIMDR__META_SIZE;
        if (!entry_crc_ok_ckpt(base, size, &ckpt, pp, prev, m, simdr__load_u32le(base + m + 16),
                               &probe, &budget))
            continue;
        int ok = 1;
        if (budget > 0 && prev != 0)
            ok = older_ok(base, size, &ckpt, &ow, prev,
                          p > TAIL_WINDOW ? p - TAIL_WINDOW : 0, &probe, &budget);
        nomem = ok < 0;
        if (ok > 0) {
            best = p;
            cand_layout = probe;
            break;
        }
    }
    if (pp) passes_free(pp);
    free(pp);
    free(fe.at);
    free(ckpt.at);
    free(ow.slot);
    simdr__u64table_free(&pm);
    free(path);
    if (nomem) return simdr__fail(SIMDR_ENOMEM, "out of memory during recovery");

    if (skip_end) {
        r->layout = layout;
        r->status = SIMDR__RECOVER_DAMAGED;
        r->damage_at = skip_end;
        r->valid_len = best ? crc_sound_prefix(base, best, cand_layout) : 0;
        return SIMDR_OK;
    }
    r->valid_len = best;
    if (best == 0) {
        r->status = SIMDR__RECOVER_NOTSTORE;
        return SIMDR_OK;
    }
    if (cand_layout < 0) chain_sound(base, best, &cand_layout);
    r->layout = cand_layout;

    /* Torn tail or damage in the middle? A torn append always leaves the
     * newest entry invalid; if the entry at the very end is valid, the bytes
     * after the prefix are real data behind a break. Its CRC alone does not
     * make it valid: in the aligned layout a link changed within the padding
     * before the payload still frames the same payload. When the newest
     * entry's payload starts right after the sound prefix, every byte past
     * the prefix is that entry's, and the entry with the broken link is the
     * torn one. A run of zero bytes ending the file holds no entry (the
     * space a mapped writer preallocated, a length that reached the disk
     * before its data): the newest entry is the one that ends where the run
     * starts, so zeros after entries behind a break do not turn that damage
     * into a tail to cut. */
    r->status = SIMDR__RECOVER_TORN;
    uint64_t last = size;
    if (meta_all_zero(base, size)) {
        /* The run starts at an entry's end q with [q, size) all zero: at
         * the last non-zero byte or up to a metadata block after it (its
         * last bytes may be zero). */
        uint64_t nz = end_before_zero_run(base, best, size);
        for (uint64_t q = nz; q < nz + SIMDR__META_SIZE && q <= size && last == size; q++)
            if (q > best && valid_behind_break(base, q, best, cand_layout))
                last = q;
    }
    if (valid_behind_break(base, last, best, cand_layout)) {
        r->status = SIMDR__RECOVER_DAMAGED;
        uint64_t q = last;
        while (q != 0) {
            uint64_t pq = step_back(base, q);
            if (pq == UINT64_MAX) break;
            q = pq;
        }
        r->damage_at = q;
        r->valid_len = crc_sound_prefix(base, best, cand_layout);
    }
    return SIMDR_OK;
}

int simdr__chain_reaches(const uint8_t *base, uint64_t end, uint64_t stop, int *layout,
                         uint64_t max_steps) {
    uint64_t p = end;
    while (p > stop && max_steps--) {
        uint64_t prev = step_back(base, p);
        if (prev == UINT64_MAX || prev < stop) return 0;
        uint64_t m = p - SIMDR__META_SIZE;
        if (!simdr__entry_crc_ok(base, prev, m, simdr__load_u32le(base + m + 16), layout))
            return 0;
        p = prev;
    }
    return p == stop;
}

#define FD_WALK_BUFFER (UINT64_C(1) << 20)
#define FD_WALK_MAX_STEPS (UINT64_C(1) << 24)

_Atomic uint64_t simdr__chain_walk_max_steps = FD_WALK_MAX_STEPS;

int simdr__chain_reaches_fd(int fd, uint64_t end, uint64_t stop, int *layout,
                            simdr__chain_rec **recs, uint64_t *n) {
    *recs = NULL;
    *n = 0;
    uint64_t cap = 0;
    uint8_t *buf = malloc(FD_WALK_BUFFER);
    if (!buf) return -1;
    int result = 0;
    uint64_t p = end, steps = 0;
    uint64_t max_steps = atomic_load_explicit(&simdr__chain_walk_max_steps, memory_order_relaxed);
    for (; p > stop && steps < max_steps; steps++) {
        uint8_t raw[SIMDR__META_SIZE];
        if (p < stop + SIMDR__META_SIZE + 1 ||
            simdr__pread_all(fd, raw, sizeof raw, p - SIMDR__META_SIZE) != 0)
            break;
        simdr__meta meta = simdr__meta_decode(raw);
        uint64_t m = p - SIMDR__META_SIZE;
        if (meta.prev >= m || meta.prev < stop ||
            entry_crc_ok_pread(fd, meta.prev, m, meta.checksum, layout, buf, FD_WALK_BUFFER) != 1)
            break;
        if (*n == cap) {
            uint64_t ncap = cap ? cap * 2 : 64;
            simdr__chain_rec *nr = realloc(*recs, ncap * sizeof *nr);
            if (!nr) {
                result = -1;
                break;
            }
            *recs = nr;
            cap = ncap;
        }
        /* A 1-byte payload is a tombstone or a value: a read that fails
         * cannot tell which, and a tombstone taken for a value would serve
         * the deleted key, so the walk stops there (not a chain reached). */
        int tomb = 0;
        if (m - meta.prev == 1) {
            uint8_t first;
            if (simdr__pread_all(fd, &first, 1, meta.prev) != 0) break;
            tomb = first == SIMDR__TOMBSTONE_BYTE;
        }
        (*recs)[(*n)++] = (simdr__chain_rec){meta.key_hash, m, tomb};
        p = meta.prev;
    }
    if (result == 0 && p == stop) result = 1;
    /* Every entry walked was sound, there are only more of them than a walk
     * takes: the chain is not broken, only long. */
    if (result == 0 && p > stop && steps == max_steps) result = 2;
    free(buf);
    if (result != 1) {
        free(*recs);
        *recs = NULL;
        *n = 0;
    }
    return result;
}

int simdr__tail_sound(int fd, const uint8_t *base, uint64_t end, int *layout) {
    uint64_t budget = UINT64_MAX;
    return tail_crcs_ok(fd, base, end, HINT_TAIL_WINDOW, layout, &budget) == 1;
}
