/*
 * names.c - key names for keys written through the CLI. The format stores
 * only a key's hash, so the tool keeps each key's bytes in a separate "name
 * record" entry beside the value (docs/FORMAT.md, "CLI key names"): the value
 * stays untouched, the file stays a plain simd-r-drive file, and a reader
 * that does not look for names never reads them. list shows the names,
 * export without keys exports every named value, and the commands that
 * delete or move a key remove its name record in the same append.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The name record of key hash H is stored under the key
 * NAME_PREFIX || H (8 bytes, little-endian); its value is
 * NAME_MAGIC || H (8 bytes, little-endian) || the key's bytes. */
static const unsigned char NAME_PREFIX[12] = {0, 's', 'i', 'm', 'd', 'r', '-', 'n', 'a', 'm', 'e', 0};
static const unsigned char NAME_MAGIC[8] = {'S', 'D', 'R', 'K', 'N', 'A', 'M', '1'};
#define NAME_HEADER 16

static void store_u64le(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t load_u64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void cli_name_key(uint64_t key_hash, unsigned char out[CLI_NAME_KEY_LEN]) {
    memcpy(out, NAME_PREFIX, sizeof NAME_PREFIX);
    store_u64le(out + sizeof NAME_PREFIX, key_hash);
}

int cli_name_record_parse(const simdr_entry *e, uint64_t *named_hash, const void **name,
                          size_t *name_len) {
    uint64_t size = simdr_entry_size(e);
    if (size < NAME_HEADER || size > NAME_HEADER + CLI_NAME_MAX)
        return 0;
    const unsigned char *p = simdr_entry_data(e);
    if (memcmp(p, NAME_MAGIC, sizeof NAME_MAGIC) != 0)
        return 0;
    uint64_t h = load_u64le(p + 8);
    unsigned char k[CLI_NAME_KEY_LEN];
    cli_name_key(h, k);
    /* Both hashes must agree, so a user value that happens to begin with the
     * magic is never taken for a name. */
    if (simdr_entry_key_hash(e) != simdr_hash_key(k, sizeof k) ||
        simdr_hash_key(p + NAME_HEADER, (size_t)size - NAME_HEADER) != h)
        return 0;
    *named_hash = h;
    *name = p + NAME_HEADER;
    *name_len = (size_t)size - NAME_HEADER;
    return 1;
}

/* simdr-server's records (docs/FORMAT.md, "Server records"): a 16-byte
 * header, "SR", version 1, flags, the key's length (u32 LE) and its expiry,
 * then the key and the value. A record of key K sits under the hash of K
 * (slot 0) or, when another key holds that slot, of K || FF "slot" n
 * (slot n, 1..15). */
#define SERVER_HEADER 16
#define SERVER_FLAG_HOLE 0x02
#define SERVER_SLOTS 16
static const unsigned char SERVER_SLOT_TAG[5] = {0xff, 's', 'l', 'o', 't'};

/* 1 when hash is the hash of one of key's slots. */
static int server_slot_of(uint64_t hash, const unsigned char *key, size_t len) {
    if (simdr_hash_key(key, len) == hash)
        return 1;
    unsigned char *probe = malloc(len + sizeof SERVER_SLOT_TAG + 1);
    if (!probe)
        return 0; /* the entry just goes unnamed */
    memcpy(probe, key, len);
    memcpy(probe + len, SERVER_SLOT_TAG, sizeof SERVER_SLOT_TAG);
    int found = 0;
    for (int n = 1; n < SERVER_SLOTS && !found; n++) {
        probe[len + sizeof SERVER_SLOT_TAG] = (unsigned char)n;
        found = simdr_hash_key(probe, len + sizeof SERVER_SLOT_TAG + 1) == hash;
    }
    free(probe);
    return found;
}

int cli_server_record_key(const simdr_entry *e, const void **key, size_t *key_len) {
    uint64_t size = simdr_entry_size(e);
    if (size < SERVER_HEADER)
        return 0;
    const unsigned char *p = simdr_entry_data(e);
    if (p[0] != 'S' || p[1] != 'R' || p[2] != 1 || (p[3] & ~0x03) || (p[3] & SERVER_FLAG_HOLE))
        return 0;
    uint64_t len = (uint64_t)p[4] | (uint64_t)p[5] << 8 | (uint64_t)p[6] << 16 |
                   (uint64_t)p[7] << 24;
    if (len > size - SERVER_HEADER)
        return 0;
    /* The entry must sit in one of the key's slots, so a value that merely
     * begins like a record of some other key is never named after it. */
    if (!server_slot_of(simdr_entry_key_hash(e), p + SERVER_HEADER, (size_t)len))
        return 0;
    *key = p + SERVER_HEADER;
    *key_len = (size_t)len;
    return 1;
}

/* The name record's value for key, in a new buffer (NULL: out of memory). */
static unsigned char *name_value(const void *key, size_t len, size_t *vlen) {
    unsigned char *v = malloc(NAME_HEADER + len);
    if (!v)
        return NULL;
    memcpy(v, NAME_MAGIC, sizeof NAME_MAGIC);
    store_u64le(v + 8, simdr_hash_key(key, len));
    memcpy(v + NAME_HEADER, key, len);
    *vlen = NAME_HEADER + len;
    return v;
}

/* 1 when the store already holds exactly this name record. */
static int name_present(simdr_store *st, const unsigned char *nk, const unsigned char *v,
                        size_t vlen) {
    simdr_entry *e = NULL;
    int same = simdr_get(st, nk, CLI_NAME_KEY_LEN, &e) == SIMDR_OK && simdr_entry_size(e) == vlen &&
               memcmp(simdr_entry_data(e), v, vlen) == 0;
    simdr_entry_release(e);
    return same;
}

int cli_name_put(simdr_store *st, const void *key, size_t len) {
    if (len > CLI_NAME_MAX)
        return SIMDR_OK; /* such a key stays unnamed, as if written elsewhere */
    size_t vlen;
    unsigned char *v = name_value(key, len, &vlen);
    if (!v)
        return SIMDR_ENOMEM;
    unsigned char nk[CLI_NAME_KEY_LEN];
    cli_name_key(simdr_hash_key(key, len), nk);
    int rc = name_present(st, nk, v, vlen) ? SIMDR_OK : simdr_put(st, nk, sizeof nk, v, vlen, NULL);
    free(v);
    return rc;
}

int cli_name_put_or_warn(simdr_store *st, const void *key, size_t len, const char *what) {
    int rc = cli_name_put(st, key, len);
    if (rc != SIMDR_OK)
        cli_err("%s: done, but its name could not be recorded (%s): list shows the key by its "
                "hash only and export cannot name it",
                what, simdr_last_error());
    return rc;
}

int cli_put_named(simdr_store *st, const void *key, size_t len, const void *value, size_t vlen) {
    if (len > CLI_NAME_MAX)
        return simdr_put(st, key, len, value, vlen, NULL);
    size_t nlen;
    unsigned char *nv = name_value(key, len, &nlen);
    if (!nv)
        return SIMDR_ENOMEM;
    unsigned char nk[CLI_NAME_KEY_LEN];
    cli_name_key(simdr_hash_key(key, len), nk);
    int rc;
    if (name_present(st, nk, nv, nlen)) {
        rc = simdr_put(st, key, len, value, vlen, NULL);
    } else {
        /* one append: the value and its name become visible together */
        simdr_kv items[2] = {{key, len, value, vlen}, {nk, sizeof nk, nv, nlen}};
        rc = simdr_put_batch(st, items, 2, NULL);
    }
    free(nv);
    return rc;
}

int cli_delete_named(simdr_store *st, const void *key, size_t len) {
    unsigned char nk[CLI_NAME_KEY_LEN];
    cli_name_key(simdr_hash_key(key, len), nk);
    int present = simdr_exists(st, key, len);
    /* A damaged value is still there, and deleting it is how a store with
     * bit rot gets rid of it (compaction refuses to copy it). */
    if (present == SIMDR_ECORRUPT)
        present = 1;
    if (present < 0)
        return present;
    if (!present)
        return SIMDR_NOTFOUND;
    /* one append: key and name go together; an absent name is skipped */
    simdr_key keys[2] = {{key, len}, {nk, sizeof nk}};
    return simdr_delete_batch(st, keys, 2, NULL, NULL);
}

int cli_name_delete(simdr_store *st, const void *key, size_t len) {
    unsigned char nk[CLI_NAME_KEY_LEN];
    cli_name_key(simdr_hash_key(key, len), nk);
    int rc = simdr_delete(st, nk, sizeof nk, NULL);
    return rc == SIMDR_NOTFOUND ? SIMDR_OK : rc;
}

/* ------------------------------------------------------------------------ */
/* All names of a store, by key hash                                         */
/* ------------------------------------------------------------------------ */

struct name_slot {
    uint64_t hash;
    simdr_entry *record; /* NULL: empty slot */
};

struct cli_names {
    struct name_slot *slots;
    size_t cap, used;
    uint64_t records; /* name records seen, live key or not */
};

static int names_insert(struct cli_names *n, uint64_t hash, simdr_entry *rec) {
    if ((n->used + 1) * 2 > n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 64;
        struct name_slot *s = calloc(cap, sizeof *s);
        if (!s)
            return -1;
        for (size_t i = 0; i < n->cap; i++) {
            if (!n->slots[i].record)
                continue;
            size_t j = (size_t)n->slots[i].hash & (cap - 1);
            while (s[j].record)
                j = (j + 1) & (cap - 1);
            s[j] = n->slots[i];
        }
        free(n->slots);
        n->slots = s;
        n->cap = cap;
    }
    size_t j = (size_t)hash & (n->cap - 1);
    while (n->slots[j].record)
        j = (j + 1) & (n->cap - 1);
    n->slots[j].hash = hash;
    n->slots[j].record = rec;
    n->used++;
    return 0;
}

int cli_names_load(simdr_store *st, struct cli_names **out) {
    *out = NULL;
    struct cli_names *n = calloc(1, sizeof *n);
    if (!n)
        return SIMDR_ENOMEM;
    simdr_iter *it = NULL;
    int rc = simdr_iter_open(st, &it);
    while (rc == SIMDR_OK) {
        const simdr_entry *e;
        rc = simdr_iter_next(it, &e);
        if (rc == SIMDR_ECORRUPT || rc == SIMDR_ECHECKSUM) {
            rc = SIMDR_OK; /* a damaged entry is check's business; names go on */
            continue;
        }
        uint64_t h;
        const void *name;
        size_t len;
        if (rc != SIMDR_OK || !cli_name_record_parse(e, &h, &name, &len))
            continue;
        n->records++;
        simdr_entry *keep = NULL;
        if (simdr_entry_dup(e, &keep) != SIMDR_OK || names_insert(n, h, keep) != 0) {
            simdr_entry_release(keep);
            rc = SIMDR_ENOMEM;
        }
    }
    simdr_iter_close(it);
    if (rc != SIMDR_NOTFOUND) {
        cli_names_free(n);
        return rc;
    }
    *out = n;
    return SIMDR_OK;
}

int cli_names_find(const struct cli_names *n, uint64_t hash, const void **name, size_t *len) {
    if (!n || !n->cap)
        return 0;
    size_t j = (size_t)hash & (n->cap - 1);
    while (n->slots[j].record) {
        if (n->slots[j].hash == hash) {
            *name = (const unsigned char *)simdr_entry_data(n->slots[j].record) + NAME_HEADER;
            *len = (size_t)simdr_entry_size(n->slots[j].record) - NAME_HEADER;
            return 1;
        }
        j = (j + 1) & (n->cap - 1);
    }
    return 0;
}

uint64_t cli_names_records(const struct cli_names *n) { return n ? n->records : 0; }

uint64_t cli_names_live(const struct cli_names *n, simdr_store *st) {
    uint64_t live = 0;
    for (size_t i = 0; n && i < n->cap; i++) {
        simdr_entry *e = NULL;
        /* a damaged value is still a live key (its name is not stale) */
        if (n->slots[i].record && simdr_get_hashed(st, n->slots[i].hash, &e) != SIMDR_NOTFOUND)
            live++;
        simdr_entry_release(e);
    }
    return live;
}

int cli_names_each(const struct cli_names *n, size_t *cursor, uint64_t *hash, const void **name,
                   size_t *len) {
    for (; n && *cursor < n->cap; (*cursor)++) {
        const struct name_slot *sl = &n->slots[*cursor];
        if (!sl->record)
            continue;
        *hash = sl->hash;
        *name = (const unsigned char *)simdr_entry_data(sl->record) + NAME_HEADER;
        *len = (size_t)simdr_entry_size(sl->record) - NAME_HEADER;
        (*cursor)++;
        return 1;
    }
    return 0;
}

void cli_names_free(struct cli_names *n) {
    if (!n)
        return;
    for (size_t i = 0; i < n->cap; i++)
        simdr_entry_release(n->slots[i].record);
    free(n->slots);
    free(n);
}

int cli_names_drop_orphans(simdr_store *st, uint64_t *dropped) {
    *dropped = 0;
    struct cli_names *n = NULL;
    int rc = cli_names_load(st, &n);
    if (rc != SIMDR_OK)
        return rc;
    size_t count = 0;
    unsigned char(*name_keys)[CLI_NAME_KEY_LEN] = calloc(n->used + 1, sizeof *name_keys);
    simdr_key *keys = calloc(n->used + 1, sizeof *keys);
    if (!name_keys || !keys)
        rc = SIMDR_ENOMEM;
    for (size_t i = 0; rc == SIMDR_OK && i < n->cap; i++) {
        simdr_entry *e = NULL;
        /* only a key that is gone: a damaged value is still a live key */
        if (n->slots[i].record && simdr_get_hashed(st, n->slots[i].hash, &e) == SIMDR_NOTFOUND) {
            cli_name_key(n->slots[i].hash, name_keys[count]);
            keys[count].key = name_keys[count];
            keys[count].key_len = CLI_NAME_KEY_LEN;
            count++;
        }
        simdr_entry_release(e);
    }
    size_t deleted = 0;
    if (rc == SIMDR_OK && count > 0)
        rc = simdr_delete_batch(st, keys, count, &deleted, NULL);
    *dropped = deleted;
    free(keys);
    free(name_keys);
    cli_names_free(n);
    return rc;
}
