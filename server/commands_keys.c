/*
 * commands_keys.c - Redis generic key commands over server records: DEL,
 * UNLINK, EXISTS, TOUCH, TYPE, RENAME(NX), COPY, KEYS, SCAN, RANDOMKEY,
 * DBSIZE and the expiry commands. Replies and error texts follow Redis 7.0.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define ERR_NOT_INT "ERR value is not an integer or out of range"

static int count_existing(client *c, int argc, char **argv, size_t *lens, int delete_them) {
    server_db *d = client_db(c);
    int n = 0;
    for (int i = 1; i < argc; i++) {
        ks_ref ref;
        int rc = cmd_lookup(c, d, argv[i], lens[i], &ref);
        if (rc < 0) return -1;
        if (!rc) continue;
        if (delete_them && cmd_delete(c, d, &ref, argv[i], lens[i])) {
            ks_ref_release(&ref);
            return -1;
        }
        ks_ref_release(&ref);
        n++;
    }
    return n;
}

void cmd_del(client *c, int argc, char **argv, size_t *lens) {
    int n = count_existing(c, argc, argv, lens, 1);
    if (n >= 0) reply_int(c, n);
}

void cmd_exists(client *c, int argc, char **argv, size_t *lens) {
    int n = count_existing(c, argc, argv, lens, 0);
    if (n >= 0) reply_int(c, n);
}

void cmd_touch(client *c, int argc, char **argv, size_t *lens) { cmd_exists(c, argc, argv, lens); }

void cmd_type(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    ks_ref ref;
    int rc = cmd_lookup(c, client_db(c), argv[1], lens[1], &ref);
    if (rc < 0) return;
    reply_simple(c, rc ? "string" : "none");
    ks_ref_release(&ref);
}

static void rename_generic(client *c, char **argv, size_t *lens, int nx) {
    server_db *d = client_db(c);
    int same = lens[1] == lens[2] && memcmp(argv[1], argv[2], lens[1]) == 0;
    ks_ref src;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &src);
    if (rc < 0) return;
    if (!rc) {
        reply_error(c, "ERR no such key");
        return;
    }
    if (same) {
        ks_ref_release(&src);
        if (nx)
            reply_int(c, 0);
        else
            reply_ok(c);
        return;
    }
    ks_ref dst;
    rc = cmd_lookup(c, d, argv[2], lens[2], &dst);
    if (rc < 0) {
        ks_ref_release(&src);
        return;
    }
    if (rc && nx) {
        ks_ref_release(&src);
        ks_ref_release(&dst);
        reply_int(c, 0);
        return;
    }
    ks_ref_release(&dst);
    rc = ks_rename(d, &src, argv[1], lens[1], &dst, argv[2], lens[2]);
    ks_ref_release(&src);
    if (rc) {
        reply_error(c, "%s", store_error(rc));
        return;
    }
    if (nx)
        reply_int(c, 1);
    else
        reply_ok(c);
}

void cmd_rename(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    rename_generic(c, argv, lens, 0);
}

void cmd_renamenx(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    rename_generic(c, argv, lens, 1);
}

int cmd_parse_db(client *c, const char *s, size_t len, int *db) {
    long long v;
    if (!parse_ll(s, len, &v)) {
        reply_error(c, ERR_NOT_INT);
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) { /* Redis 7.0's getIntFromObjectOrReply, wording included */
        reply_error(c, "ERR value is out of range, value must between -2147483648 and 2147483647");
        return -1;
    }
    if (v < 0 || v >= SERVER_DBS) {
        reply_error(c, "ERR DB index is out of range");
        return -1;
    }
    *db = (int)v;
    return 0;
}

void cmd_copy(client *c, int argc, char **argv, size_t *lens) {
    int replace = 0, dbid = c->db;
    for (int j = 3; j < argc; j++) {
        if (eq_nocase(argv[j], lens[j], "replace")) {
            replace = 1;
        } else if (eq_nocase(argv[j], lens[j], "db") && j < argc - 1) {
            if (cmd_parse_db(c, argv[j + 1], lens[j + 1], &dbid)) return;
            j++;
        } else {
            reply_error(c, "ERR syntax error");
            return;
        }
    }
    server_db *src = client_db(c), *dst = &srv.db[dbid];
    if (src == dst && lens[1] == lens[2] && memcmp(argv[1], argv[2], lens[1]) == 0) {
        reply_error(c, "ERR source and destination objects are the same");
        return;
    }
    ks_ref s, t;
    int rc = cmd_lookup(c, src, argv[1], lens[1], &s);
    if (rc < 0) return;
    if (!rc) {
        reply_int(c, 0);
        return;
    }
    rc = cmd_lookup(c, dst, argv[2], lens[2], &t);
    if (rc < 0 || (rc && !replace)) {
        ks_ref_release(&s);
        ks_ref_release(&t);
        if (rc > 0) reply_int(c, 0);
        return;
    }
    ks_ref_release(&t);
    struct iovec v = {(void *)s.rec.value, s.rec.value_len};
    int w = cmd_write(c, dst, &t, argv[2], lens[2], &v, 1, s.rec.expire_ms);
    ks_ref_release(&s);
    if (!w) reply_int(c, 1);
}

/* 1 when the entry sits at one of its record's key's slots, where lookups
 * find it. Another program can store a record anywhere (the simd-r-drive
 * tool's rename keeps the record under the new name's hash; its read prints a
 * record, which its write stores under any name): such an entry is foreign,
 * and listing it would name a key that GET calls absent, or one twice. */
static int at_own_slot(const simdr_entry *e, const record_view *rv) {
    uint64_t h = simdr_entry_key_hash(e);
    for (int slot = 0; slot < SLOT_PROBES; slot++)
        if (slot_hash(rv->key, rv->key_len, slot) == h) return 1;
    return 0;
}

/* A record of the database that is a live, unexpired key. */
static int live_record(const simdr_entry *e, long long now, record_view *rv) {
    return record_parse(simdr_entry_data(e), simdr_entry_size(e), rv) &&
           !(rv->flags & RECORD_FLAG_HOLE) && !record_expired(rv, now) &&
           at_own_slot(e, rv);
}

void cmd_keys(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    server_db *d = client_db(c);
    long long now = key_now_ms();
    int all = lens[1] == 1 && argv[1][0] == '*';
    struct evbuffer *tmp = evbuffer_new();
    long long n = 0;
    simdr_iter *it;
    if (tmp && d->store && simdr_iter_open(d->store, &it) == 0) {
        const simdr_entry *e;
        int rc;
        while ((rc = simdr_iter_next(it, &e)) != SIMDR_NOTFOUND) {
            record_view rv;
            if (rc || !live_record(e, now, &rv)) continue;
            if (!all && !glob_match(argv[1], lens[1], (const char *)rv.key, rv.key_len, 0))
                continue;
            evbuffer_add_printf(tmp, "$%zu\r\n", rv.key_len);
            evbuffer_add(tmp, rv.key, rv.key_len);
            evbuffer_add(tmp, "\r\n", 2);
            n++;
        }
        simdr_iter_close(it);
    }
    reply_array(c, n);
    if (tmp) {
        evbuffer_add_buffer(c->out, tmp);
        evbuffer_free(tmp);
    }
}

/* SCAN visits a database's records in the order of their slot hashes'
 * low 32 bits, then their high 32 bits: the engine's index is laid out by
 * the low bits (simdr_hashes_in_range), so a step reads only its share of
 * the table, and a cursor (the position in that order of the next record)
 * stays meaningful across writes, growth and compaction. A record present
 * from the first step to the last is returned exactly once. */
static uint64_t scan_order(uint64_t h) { return h << 32 | h >> 32; }

static int cmp_scan_order(const void *a, const void *b) {
    uint64_t x = scan_order(*(const uint64_t *)a), y = scan_order(*(const uint64_t *)b);
    return x < y ? -1 : x > y;
}

/* The slot hashes of SCAN's step from cursor: at most count of them, in scan
 * order, and the cursor after them (0 at the end). The step's range of low
 * bits is sized to hold about count records. */
static int scan_step(simdr_store *s, uint64_t cursor, uint64_t count, uint64_t **out, size_t *n,
                     uint64_t *next) {
    uint64_t total = simdr_count(s);
    uint64_t from = cursor >> 32;
    uint64_t to = ks_range_end(from, ks_range_width(total, count));
    uint64_t *h;
    size_t k;
    int rc = ks_hashes_in_range(s, from, to, &h, &k);
    if (rc) return rc;
    /* The first range may begin inside a step already returned. */
    size_t kept = 0;
    for (size_t i = 0; i < k; i++)
        if (scan_order(h[i]) >= cursor) h[kept++] = h[i];
    qsort(h, kept, sizeof *h, cmp_scan_order);
    if (kept > count) {
        *next = scan_order(h[count]);
        kept = (size_t)count;
    } else {
        *next = to == HASH_SPACE ? 0 : to << 32;
    }
    *out = h;
    *n = kept;
    return 0;
}

void cmd_scan(client *c, int argc, char **argv, size_t *lens) {
    char cur[32];
    /* As Redis's strtoul parse: an empty cursor is 0, "-1" wraps around. */
    if (lens[1] >= sizeof cur) {
        reply_error(c, "ERR invalid cursor");
        return;
    }
    memcpy(cur, argv[1], lens[1]);
    cur[lens[1]] = 0;
    if (isspace((unsigned char)cur[0])) {
        reply_error(c, "ERR invalid cursor");
        return;
    }
    char *end;
    errno = 0;
    unsigned long long cursor = strtoull(cur, &end, 10);
    if (*end || errno == ERANGE) {
        reply_error(c, "ERR invalid cursor");
        return;
    }
    long long count = 10;
    const char *pat = NULL, *type = NULL;
    size_t patlen = 0, typelen = 0;
    for (int i = 2; i < argc;) {
        int left = argc - i;
        if (eq_nocase(argv[i], lens[i], "count") && left >= 2) {
            if (!parse_ll(argv[i + 1], lens[i + 1], &count)) {
                reply_error(c, ERR_NOT_INT);
                return;
            }
            if (count < 1) {
                reply_error(c, "ERR syntax error");
                return;
            }
            i += 2;
        } else if (eq_nocase(argv[i], lens[i], "match") && left >= 2) {
            pat = argv[i + 1];
            patlen = lens[i + 1];
            if (patlen == 1 && pat[0] == '*') pat = NULL;
            i += 2;
        } else if (eq_nocase(argv[i], lens[i], "type") && left >= 2) {
            type = argv[i + 1];
            typelen = lens[i + 1];
            i += 2;
        } else {
            reply_error(c, "ERR syntax error");
            return;
        }
    }
    server_db *d = client_db(c);
    ks_flush_pending();
    uint64_t *hashes = NULL, next = 0;
    size_t k = 0;
    if (d->store) {
        int rc = scan_step(d->store, cursor, (uint64_t)count, &hashes, &k, &next);
        if (rc) {
            reply_error(c, "%s", store_error(rc));
            return;
        }
    }
    long long now = key_now_ms();
    int type_ok = !type || eq_nocase(type, typelen, "string");
    struct evbuffer *tmp = evbuffer_new();
    long long n = 0;
    for (size_t i = 0; i < k; i++) {
        simdr_entry *e;
        if (simdr_get_hashed(d->store, hashes[i], &e) != 0) continue;
        record_view rv;
        if (type_ok && tmp && live_record(e, now, &rv) &&
            (!pat || glob_match(pat, patlen, (const char *)rv.key, rv.key_len, 0))) {
            evbuffer_add_printf(tmp, "$%zu\r\n", rv.key_len);
            evbuffer_add(tmp, rv.key, rv.key_len);
            evbuffer_add(tmp, "\r\n", 2);
            n++;
        }
        simdr_entry_release(e);
    }
    free(hashes);
    reply_array(c, 2);
    char nb[32];
    int nl = snprintf(nb, sizeof nb, "%llu", (unsigned long long)next);
    reply_bulk(c, nb, (size_t)nl);
    reply_array(c, n);
    if (tmp) {
        evbuffer_add_buffer(c->out, tmp);
        evbuffer_free(tmp);
    }
}

/* A random live record: a random stretch of the hash space sized to hold
 * about eight records (simdr_hashes_in_range reads only its share of the
 * index), one of its records at random; expired ones are passed over. After
 * 64 stretches without a live record (a database of mostly expired keys), a
 * walk of every record. */
void cmd_randomkey(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    server_db *d = client_db(c);
    uint64_t total = db_size(d);
    long long now = key_now_ms();
    if (total == 0) {
        reply_null(c);
        return;
    }
    uint64_t width = ks_range_width(total, 8);
    for (int attempt = 0; attempt < 64; attempt++) {
        /* A stretch may run past the end of the space and on from 0, so a
         * record near either end is as likely to be drawn as any other. */
        uint64_t from = ((uint64_t)random() << 31 ^ (uint64_t)random()) % HASH_SPACE;
        uint64_t *h, *h2 = NULL;
        size_t k, k2 = 0;
        uint64_t to = ks_range_end(from, width);
        if (ks_hashes_in_range(d->store, from, to, &h, &k) != 0) break;
        if (to == HASH_SPACE && width > HASH_SPACE - from && width < HASH_SPACE &&
            ks_hashes_in_range(d->store, 0, width - (HASH_SPACE - from), &h2, &k2) != 0) {
            free(h);
            break;
        }
        uint64_t *all = k2 ? realloc(h, (k + k2) * sizeof *h) : h;
        if (!all) {
            free(h);
            free(h2);
            break;
        }
        if (k2) memcpy(all + k, h2, k2 * sizeof *h2);
        free(h2);
        k += k2;
        for (size_t tries = 0; tries < k; tries++) {
            simdr_entry *e;
            record_view rv;
            if (simdr_get_hashed(d->store, all[(uint64_t)random() % k], &e) != 0) continue;
            if (live_record(e, now, &rv)) {
                reply_bulk(c, rv.key, rv.key_len);
                simdr_entry_release(e);
                free(all);
                return;
            }
            simdr_entry_release(e);
        }
        free(all);
    }
    simdr_iter *it;
    if (simdr_iter_open(d->store, &it) == 0) {
        const simdr_entry *e;
        int rc;
        while ((rc = simdr_iter_next(it, &e)) != SIMDR_NOTFOUND) {
            record_view rv;
            if (rc || !live_record(e, now, &rv)) continue;
            reply_bulk(c, rv.key, rv.key_len);
            simdr_iter_close(it);
            return;
        }
        simdr_iter_close(it);
    }
    reply_null(c);
}

void cmd_dbsize(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    reply_int(c, (long long)db_size(client_db(c)));
}

enum { EXP_NX = 1, EXP_XX = 2, EXP_GT = 4, EXP_LT = 8 };

static void expire_generic(client *c, int argc, char **argv, size_t *lens, long long basetime,
                           int seconds, const char *name) {
    int flags = 0;
    for (int j = 3; j < argc; j++) {
        if (eq_nocase(argv[j], lens[j], "nx"))
            flags |= EXP_NX;
        else if (eq_nocase(argv[j], lens[j], "xx"))
            flags |= EXP_XX;
        else if (eq_nocase(argv[j], lens[j], "gt"))
            flags |= EXP_GT;
        else if (eq_nocase(argv[j], lens[j], "lt"))
            flags |= EXP_LT;
        else {
            reply_error(c, "ERR Unsupported option %.*s", (int)lens[j], argv[j]);
            return;
        }
    }
    if ((flags & EXP_NX) && (flags & (EXP_XX | EXP_GT | EXP_LT))) {
        reply_error(c, "ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if ((flags & EXP_GT) && (flags & EXP_LT)) {
        reply_error(c, "ERR GT and LT options at the same time are not compatible");
        return;
    }
    long long when;
    if (!parse_ll(argv[2], lens[2], &when)) {
        reply_error(c, ERR_NOT_INT);
        return;
    }
    if (seconds) {
        if (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000) {
            reply_error(c, "ERR invalid expire time in '%s' command", name);
            return;
        }
        when *= 1000;
    }
    if (when > LLONG_MAX - basetime) {
        reply_error(c, "ERR invalid expire time in '%s' command", name);
        return;
    }
    when += basetime;
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &ref);
    if (rc < 0) return;
    if (!rc) {
        reply_int(c, 0);
        return;
    }
    long long cur = ref.rec.expire_ms ? (long long)ref.rec.expire_ms : -1;
    if (((flags & EXP_NX) && cur != -1) || ((flags & EXP_XX) && cur == -1) ||
        ((flags & EXP_GT) && (when <= cur || cur == -1)) ||
        ((flags & EXP_LT) && cur != -1 && when >= cur)) {
        ks_ref_release(&ref);
        reply_int(c, 0);
        return;
    }
    int err;
    if (when <= now_ms()) {
        err = cmd_delete(c, d, &ref, argv[1], lens[1]);
    } else {
        struct iovec v = {(void *)ref.rec.value, ref.rec.value_len};
        err = cmd_write(c, d, &ref, argv[1], lens[1], &v, 1, (uint64_t)when);
    }
    ks_ref_release(&ref);
    if (!err) reply_int(c, 1);
}

void cmd_expire(client *c, int argc, char **argv, size_t *lens) {
    expire_generic(c, argc, argv, lens, now_ms(), 1, "expire");
}
void cmd_pexpire(client *c, int argc, char **argv, size_t *lens) {
    expire_generic(c, argc, argv, lens, now_ms(), 0, "pexpire");
}
void cmd_expireat(client *c, int argc, char **argv, size_t *lens) {
    expire_generic(c, argc, argv, lens, 0, 1, "expireat");
}
void cmd_pexpireat(client *c, int argc, char **argv, size_t *lens) {
    expire_generic(c, argc, argv, lens, 0, 0, "pexpireat");
}

/* Milliseconds (>= 0) to the nearest second, as Redis rounds TTL and
 * EXPIRETIME, without the overflow of ms + 500 near the 64-bit limit. */
static long long ms_to_rounded_s(long long ms) { return ms / 1000 + (ms % 1000 >= 500); }

/* mode 0 TTL, 1 PTTL, 2 EXPIRETIME, 3 PEXPIRETIME */
static void ttl_generic(client *c, char **argv, size_t *lens, int mode) {
    ks_ref ref;
    int rc = cmd_lookup(c, client_db(c), argv[1], lens[1], &ref);
    if (rc < 0) return;
    if (!rc) {
        reply_int(c, -2);
        return;
    }
    long long exp = (long long)ref.rec.expire_ms;
    ks_ref_release(&ref);
    if (!exp) {
        reply_int(c, -1);
        return;
    }
    long long ttl = exp - now_ms();
    if (ttl < 0) ttl = 0;
    switch (mode) {
    case 0: reply_int(c, ms_to_rounded_s(ttl)); break;
    case 1: reply_int(c, ttl); break;
    case 2: reply_int(c, ms_to_rounded_s(exp)); break;
    default: reply_int(c, exp); break;
    }
}

void cmd_ttl(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    ttl_generic(c, argv, lens, 0);
}
void cmd_pttl(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    ttl_generic(c, argv, lens, 1);
}
void cmd_expiretime(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    ttl_generic(c, argv, lens, 2);
}
void cmd_pexpiretime(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    ttl_generic(c, argv, lens, 3);
}

void cmd_persist(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &ref);
    if (rc < 0) return;
    if (!rc || !ref.rec.expire_ms) {
        ks_ref_release(&ref);
        reply_int(c, 0);
        return;
    }
    struct iovec v = {(void *)ref.rec.value, ref.rec.value_len};
    int err = cmd_write(c, d, &ref, argv[1], lens[1], &v, 1, 0);
    ks_ref_release(&ref);
    if (!err) reply_int(c, 1);
}
