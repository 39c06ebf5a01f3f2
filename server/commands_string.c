/*
 * commands_string.c - Redis string commands over server records: GET, SET
 * and its options, the GET/SET variants, MGET through the engine's batch
 * read, MSET/MSETNX as one batch append, APPEND, ranges and counters.
 * Replies and error texts follow Redis 7.0.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define ERR_NOT_INT "ERR value is not an integer or out of range"
#define ERR_SYNTAX "ERR syntax error"

int cmd_lookup(client *c, server_db *d, const char *key, size_t klen, ks_ref *ref) {
    int rc = ks_lookup(d, key, klen, key_now_ms(), ref);
    if (rc < 0) {
        reply_error(c, "%s", store_error(rc));
        return -1;
    }
    return rc;
}

int cmd_write(client *c, server_db *d, ks_ref *ref, const char *key, size_t klen,
              const struct iovec *iov, int niov, uint64_t expire_ms) {
    int rc = ks_write(d, ref, key, klen, iov, niov, expire_ms);
    if (rc) {
        reply_error(c, "%s", store_error(rc));
        return -1;
    }
    return 0;
}

int cmd_delete(client *c, server_db *d, ks_ref *ref, const char *key, size_t klen) {
    int rc = ks_delete(d, ref, key, klen);
    if (rc) {
        reply_error(c, "%s", store_error(rc));
        return -1;
    }
    return 0;
}

static int get_ll(client *c, const char *s, size_t len, long long *v) {
    if (!parse_ll(s, len, v)) {
        reply_error(c, ERR_NOT_INT);
        return -1;
    }
    return 0;
}

void cmd_get(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    ks_ref ref;
    int rc = cmd_lookup(c, client_db(c), argv[1], lens[1], &ref);
    if (rc < 0) return;
    if (!rc) {
        srv.keyspace_misses++;
        reply_null(c);
        return;
    }
    srv.keyspace_hits++;
    reply_bulk_entry(c, ref.entry, ref.rec.value, ref.rec.value_len);
}

/* Options shared by SET and GETEX (Redis's parseExtendedStringArguments). */
enum {
    OPT_NX = 1 << 0, OPT_XX = 1 << 1, OPT_GET = 1 << 2, OPT_KEEPTTL = 1 << 3,
    OPT_PERSIST = 1 << 4, OPT_EX = 1 << 5, OPT_PX = 1 << 6, OPT_EXAT = 1 << 7, OPT_PXAT = 1 << 8
};
#define OPT_UNITS (OPT_EX | OPT_PX | OPT_EXAT | OPT_PXAT)

static int parse_string_options(client *c, int argc, char **argv, size_t *lens, int first,
                                int is_set, unsigned *flags, int *expire_arg) {
    *flags = 0;
    *expire_arg = -1;
    for (int j = first; j < argc; j++) {
        const char *o = argv[j];
        size_t l = lens[j];
        int has_next = j < argc - 1;
        if (is_set && eq_nocase(o, l, "nx") && !(*flags & OPT_XX)) {
            *flags |= OPT_NX;
        } else if (is_set && eq_nocase(o, l, "xx") && !(*flags & OPT_NX)) {
            *flags |= OPT_XX;
        } else if (is_set && eq_nocase(o, l, "get")) {
            *flags |= OPT_GET;
        } else if (is_set && eq_nocase(o, l, "keepttl") && !(*flags & (OPT_PERSIST | OPT_UNITS))) {
            *flags |= OPT_KEEPTTL;
        } else if (!is_set && eq_nocase(o, l, "persist") && !(*flags & (OPT_UNITS | OPT_KEEPTTL))) {
            *flags |= OPT_PERSIST;
        } else if (eq_nocase(o, l, "ex") && has_next &&
                   !(*flags & (OPT_KEEPTTL | OPT_PERSIST | OPT_EXAT | OPT_PX | OPT_PXAT))) {
            *flags |= OPT_EX;
            *expire_arg = ++j;
        } else if (eq_nocase(o, l, "px") && has_next &&
                   !(*flags & (OPT_KEEPTTL | OPT_PERSIST | OPT_EX | OPT_EXAT | OPT_PXAT))) {
            *flags |= OPT_PX;
            *expire_arg = ++j;
        } else if (eq_nocase(o, l, "exat") && has_next &&
                   !(*flags & (OPT_KEEPTTL | OPT_PERSIST | OPT_EX | OPT_PX | OPT_PXAT))) {
            *flags |= OPT_EXAT;
            *expire_arg = ++j;
        } else if (eq_nocase(o, l, "pxat") && has_next &&
                   !(*flags & (OPT_KEEPTTL | OPT_PERSIST | OPT_EX | OPT_EXAT | OPT_PX))) {
            *flags |= OPT_PXAT;
            *expire_arg = ++j;
        } else {
            reply_error(c, ERR_SYNTAX);
            return -1;
        }
    }
    return 0;
}

/* Redis's getExpireMillisecondsOrReply: the absolute expiry in ms. */
static int expire_ms_from_arg(client *c, const char *s, size_t len, unsigned flags,
                              const char *cmdname, long long *out) {
    long long ms;
    if (get_ll(c, s, len, &ms)) return -1;
    int seconds = (flags & (OPT_EX | OPT_EXAT)) != 0;
    if (ms <= 0 || (seconds && ms > LLONG_MAX / 1000)) {
        reply_error(c, "ERR invalid expire time in '%s' command", cmdname);
        return -1;
    }
    if (seconds) ms *= 1000;
    if (flags & (OPT_PX | OPT_EX)) {
        long long now = now_ms();
        if (ms > LLONG_MAX - now) {
            reply_error(c, "ERR invalid expire time in '%s' command", cmdname);
            return -1;
        }
        ms += now;
    }
    *out = ms;
    return 0;
}

static void set_generic(client *c, const char *key, size_t klen, const char *val, size_t vlen,
                        unsigned flags, int expire_arg, char **argv, size_t *lens,
                        const char *cmdname, int nx_reply_int) {
    long long when = 0;
    if (expire_arg >= 0 &&
        expire_ms_from_arg(c, argv[expire_arg], lens[expire_arg], flags, cmdname, &when))
        return;
    server_db *d = client_db(c);
    ks_ref ref;
    int found = cmd_lookup(c, d, key, klen, &ref);
    if (found < 0) return;
    if (flags & OPT_GET) {
        if (found)
            reply_bulk(c, ref.rec.value, ref.rec.value_len);
        else
            reply_null(c);
    }
    if (((flags & OPT_NX) && found) || ((flags & OPT_XX) && !found)) {
        ks_ref_release(&ref);
        if (nx_reply_int)
            reply_int(c, 0);
        else if (!(flags & OPT_GET))
            reply_null(c);
        return;
    }
    uint64_t expire = (uint64_t)when;
    if ((flags & OPT_KEEPTTL) && found) expire = ref.rec.expire_ms;
    struct iovec v = {(void *)val, vlen};
    ks_ref_release(&ref);
    if (cmd_write(c, d, &ref, key, klen, &v, 1, expire)) return;
    if (nx_reply_int)
        reply_int(c, 1);
    else if (!(flags & OPT_GET))
        reply_ok(c);
}

void cmd_set(client *c, int argc, char **argv, size_t *lens) {
    unsigned flags;
    int ea;
    if (parse_string_options(c, argc, argv, lens, 3, 1, &flags, &ea)) return;
    set_generic(c, argv[1], lens[1], argv[2], lens[2], flags, ea, argv, lens, "set", 0);
}

void cmd_setnx(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    set_generic(c, argv[1], lens[1], argv[2], lens[2], OPT_NX, -1, argv, lens, "setnx", 1);
}

void cmd_setex(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    set_generic(c, argv[1], lens[1], argv[3], lens[3], OPT_EX, 2, argv, lens, "setex", 0);
}

void cmd_psetex(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    set_generic(c, argv[1], lens[1], argv[3], lens[3], OPT_PX, 2, argv, lens, "psetex", 0);
}

void cmd_getset(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    set_generic(c, argv[1], lens[1], argv[2], lens[2], OPT_GET, -1, argv, lens, "getset", 0);
}

void cmd_getdel(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &ref);
    if (rc < 0) return;
    if (!rc) {
        reply_null(c);
        return;
    }
    if (cmd_delete(c, d, &ref, argv[1], lens[1])) {
        ks_ref_release(&ref);
        return;
    }
    reply_bulk_entry(c, ref.entry, ref.rec.value, ref.rec.value_len);
}

void cmd_getex(client *c, int argc, char **argv, size_t *lens) {
    unsigned flags;
    int ea;
    long long when = 0;
    if (parse_string_options(c, argc, argv, lens, 2, 0, &flags, &ea)) return;
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &ref);
    if (rc < 0) return;
    if (!rc) {
        reply_null(c);
        return;
    }
    /* Redis checks the time only once the key is found: a missing key
     * answers nil whatever the time says. */
    if (ea >= 0 && expire_ms_from_arg(c, argv[ea], lens[ea], flags, "getex", &when)) {
        ks_ref_release(&ref);
        return;
    }
    int change = (ea >= 0) || ((flags & OPT_PERSIST) && ref.rec.expire_ms);
    if (change && ea >= 0 && when <= now_ms()) {
        /* Already expired: the key goes, the old value is still the reply. */
        if (cmd_delete(c, d, &ref, argv[1], lens[1])) {
            ks_ref_release(&ref);
            return;
        }
    } else if (change) {
        struct iovec v = {(void *)ref.rec.value, ref.rec.value_len};
        if (cmd_write(c, d, &ref, argv[1], lens[1], &v, 1, ea >= 0 ? (uint64_t)when : 0)) {
            ks_ref_release(&ref);
            return;
        }
    }
    reply_bulk_entry(c, ref.entry, ref.rec.value, ref.rec.value_len);
}

void cmd_mget(client *c, int argc, char **argv, size_t *lens) {
    server_db *d = client_db(c);
    size_t n = (size_t)argc - 1;
    long long now = key_now_ms();
    reply_array(c, (long long)n);
    simdr_entry **out = NULL;
    simdr_key *keys = NULL;
    ks_flush_pending(); /* the batch read sees the engine only */
    if (d->store && slot_hash_mask == UINT64_MAX) {
        out = calloc(n, sizeof *out);
        keys = malloc(n * sizeof *keys);
        if (out && keys) {
            for (size_t i = 0; i < n; i++) {
                keys[i].key = argv[i + 1];
                keys[i].key_len = lens[i + 1];
            }
            if (simdr_get_batch(d->store, keys, n, out) < 0) memset(out, 0, n * sizeof *out);
        }
    }
    for (size_t i = 0; i < n; i++) {
        simdr_entry *e = out ? out[i] : NULL;
        if (!e && out && keys) { /* first slot empty: the key is absent */
            srv.keyspace_misses++;
            reply_null(c);
            continue;
        }
        record_view rv;
        if (e && record_parse(simdr_entry_data(e), simdr_entry_size(e), &rv) &&
            !(rv.flags & RECORD_FLAG_HOLE) && rv.key_len == lens[i + 1] &&
            memcmp(rv.key, argv[i + 1], rv.key_len) == 0 &&
            !record_expired(&rv, now)) {
            srv.keyspace_hits++;
            reply_bulk_entry(c, e, rv.value, rv.value_len);
            continue;
        }
        /* Collision, hole, expiry or no batch: the ordinary lookup decides. */
        simdr_entry_release(e);
        ks_ref ref;
        int rc = ks_lookup(d, argv[i + 1], lens[i + 1], now, &ref);
        if (rc == 1) {
            srv.keyspace_hits++;
            reply_bulk_entry(c, ref.entry, ref.rec.value, ref.rec.value_len);
        } else {
            srv.keyspace_misses++;
            reply_null(c);
        }
    }
    free(out);
    free(keys);
}

/* Writes argv[1..] as key/value pairs (argv[0] is not read); expiries are
 * cleared. */
int store_pairs(server_db *d, int argc, char **argv, size_t *lens) {
    /* Each pair's record joins the turn's pending batch (keyspace.c), so
     * the whole MSET goes out in one append with the other writes; pairs
     * with a value too big for that batch go out together in an append of
     * their own (ks_write_pairs_at_once): never some of them alone. */
    long long now = key_now_ms();
    int rc = ks_write_pairs_at_once(d, argv + 1, lens + 1, (size_t)(argc - 1) / 2, now);
    if (rc != 1) return rc;
    rc = 0;
    for (int i = 1; i + 1 < argc && rc == 0; i += 2) {
        ks_ref ref;
        rc = ks_lookup(d, argv[i], lens[i], now, &ref);
        if (rc < 0) break;
        ks_ref_release(&ref);
        struct iovec v = {argv[i + 1], lens[i + 1]};
        rc = ks_write(d, &ref, argv[i], lens[i], &v, 1, 0);
    }
    return rc;
}

static int mset_pairs(client *c, int argc, char **argv, size_t *lens) {
    int rc = store_pairs(client_db(c), argc, argv, lens);
    if (rc) reply_error(c, "%s", store_error(rc));
    return rc ? -1 : 0;
}

void cmd_mset(client *c, int argc, char **argv, size_t *lens) {
    if (argc % 2 == 0) {
        reply_error(c, "ERR wrong number of arguments for 'mset' command");
        return;
    }
    if (mset_pairs(c, argc, argv, lens) == 0) reply_ok(c);
}

void cmd_msetnx(client *c, int argc, char **argv, size_t *lens) {
    if (argc % 2 == 0) {
        reply_error(c, "ERR wrong number of arguments for 'msetnx' command");
        return;
    }
    server_db *d = client_db(c);
    for (int i = 1; i < argc; i += 2) {
        ks_ref ref;
        int rc = cmd_lookup(c, d, argv[i], lens[i], &ref);
        if (rc < 0) return;
        ks_ref_release(&ref);
        if (rc) {
            reply_int(c, 0);
            return;
        }
    }
    if (mset_pairs(c, argc, argv, lens) == 0) reply_int(c, 1);
}

static int check_length(client *c, long long offset, size_t add) {
    if ((unsigned long long)offset + add > (unsigned long long)srv.cfg.proto_max_bulk_len ||
        (unsigned long long)offset + add < add) {
        reply_error(c, "ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        return -1;
    }
    return 0;
}

void cmd_append(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &ref);
    if (rc < 0) return;
    size_t old = rc ? ref.rec.value_len : 0;
    if (rc && check_length(c, (long long)old, lens[2])) {
        ks_ref_release(&ref);
        return;
    }
    struct iovec v[2] = {{rc ? (void *)ref.rec.value : NULL, old}, {argv[2], lens[2]}};
    uint64_t expire = rc ? ref.rec.expire_ms : 0;
    int w = cmd_write(c, d, &ref, argv[1], lens[1], v, 2, expire);
    ks_ref_release(&ref);
    if (!w) reply_int(c, (long long)(old + lens[2]));
}

void cmd_strlen(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    ks_ref ref;
    int rc = cmd_lookup(c, client_db(c), argv[1], lens[1], &ref);
    if (rc < 0) return;
    reply_int(c, rc ? (long long)ref.rec.value_len : 0);
    ks_ref_release(&ref);
}

void cmd_getrange(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    long long start, end;
    if (get_ll(c, argv[2], lens[2], &start) || get_ll(c, argv[3], lens[3], &end)) return;
    ks_ref ref;
    int rc = cmd_lookup(c, client_db(c), argv[1], lens[1], &ref);
    if (rc < 0) return;
    if (!rc) {
        reply_bulk(c, "", 0);
        return;
    }
    long long len = (long long)ref.rec.value_len;
    if (start < 0 && end < 0 && start > end) {
        ks_ref_release(&ref);
        reply_bulk(c, "", 0);
        return;
    }
    if (start < 0) start = len + start;
    if (end < 0) end = len + end;
    if (start < 0) start = 0;
    if (end < 0) end = 0;
    if (end >= len) end = len - 1;
    if (start > end || len == 0) {
        ks_ref_release(&ref);
        reply_bulk(c, "", 0);
        return;
    }
    reply_bulk_entry(c, ref.entry, ref.rec.value + start, (size_t)(end - start + 1));
}

void cmd_setrange(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    long long offset;
    if (get_ll(c, argv[2], lens[2], &offset)) return;
    if (offset < 0) {
        reply_error(c, "ERR offset is out of range");
        return;
    }
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &ref);
    if (rc < 0) return;
    size_t olen = rc ? ref.rec.value_len : 0;
    if (lens[3] == 0) {
        ks_ref_release(&ref);
        reply_int(c, (long long)olen);
        return;
    }
    if (check_length(c, offset, lens[3])) {
        ks_ref_release(&ref);
        return;
    }
    size_t end = (size_t)offset + lens[3];
    size_t nlen = end > olen ? end : olen;
    char *buf = calloc(1, nlen);
    if (!buf) {
        ks_ref_release(&ref);
        reply_error(c, "ERR out of memory");
        return;
    }
    if (olen) memcpy(buf, ref.rec.value, olen);
    memcpy(buf + offset, argv[3], lens[3]);
    struct iovec v = {buf, nlen};
    uint64_t expire = rc ? ref.rec.expire_ms : 0;
    int w = cmd_write(c, d, &ref, argv[1], lens[1], &v, 1, expire);
    ks_ref_release(&ref);
    free(buf);
    if (!w) reply_int(c, (long long)nlen);
}

static void incr_by(client *c, const char *key, size_t klen, long long incr) {
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, key, klen, &ref);
    if (rc < 0) return;
    long long value = 0;
    if (rc && !parse_ll((const char *)ref.rec.value, ref.rec.value_len, &value)) {
        ks_ref_release(&ref);
        reply_error(c, ERR_NOT_INT);
        return;
    }
    if ((incr < 0 && value < 0 && incr < (LLONG_MIN - value)) ||
        (incr > 0 && value > 0 && incr > (LLONG_MAX - value))) {
        ks_ref_release(&ref);
        reply_error(c, "ERR increment or decrement would overflow");
        return;
    }
    value += incr;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", value);
    struct iovec v = {buf, (size_t)n};
    uint64_t expire = rc ? ref.rec.expire_ms : 0;
    int w = cmd_write(c, d, &ref, key, klen, &v, 1, expire);
    ks_ref_release(&ref);
    if (!w) reply_int(c, value);
}

void cmd_incr(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    incr_by(c, argv[1], lens[1], 1);
}

void cmd_decr(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    incr_by(c, argv[1], lens[1], -1);
}

void cmd_incrby(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    long long incr;
    if (get_ll(c, argv[2], lens[2], &incr)) return;
    incr_by(c, argv[1], lens[1], incr);
}

void cmd_decrby(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    long long incr;
    if (get_ll(c, argv[2], lens[2], &incr)) return;
    if (incr == LLONG_MIN) {
        reply_error(c, "ERR decrement would overflow");
        return;
    }
    incr_by(c, argv[1], lens[1], -incr);
}

void cmd_incrbyfloat(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = cmd_lookup(c, d, argv[1], lens[1], &ref);
    if (rc < 0) return;
    long double value = 0, incr;
    if ((rc && !parse_ld((const char *)ref.rec.value, ref.rec.value_len, &value)) ||
        !parse_ld(argv[2], lens[2], &incr)) {
        ks_ref_release(&ref);
        reply_error(c, "ERR value is not a valid float");
        return;
    }
    value += incr;
    if (isnan(value) || isinf(value)) {
        ks_ref_release(&ref);
        reply_error(c, "ERR increment would produce NaN or Infinity");
        return;
    }
    char buf[5200];
    int n = format_ld(buf, sizeof buf, value);
    if (n < 0) {
        ks_ref_release(&ref);
        reply_error(c, "ERR value is not a valid float");
        return;
    }
    struct iovec v = {buf, (size_t)n};
    uint64_t expire = rc ? ref.rec.expire_ms : 0;
    int w = cmd_write(c, d, &ref, argv[1], lens[1], &v, 1, expire);
    ks_ref_release(&ref);
    if (!w) reply_bulk(c, buf, (size_t)n);
}
