/*
 * keyspace.c - how simdr-server keeps Redis keys in simdr stores: one store
 * file per database, the record that carries key bytes and expiry beside the
 * value (docs/FORMAT.md, "Server records"), slot probing that keeps two keys
 * apart when their 64-bit hashes collide, expiry on access and the bounded
 * active expiry cycle.
 *
 * Slots: a key's first slot is simdr_hash_key(key), so a key written by the
 * server can be read by name with any simd-r-drive tool. When that slot holds
 * a record of another key (a hash collision), the key goes to slot n, whose
 * hash is simdr_hash_key(key || 0xFF "slot" || n), for n = 1..15. A lookup
 * walks the slots until it finds the key or an empty slot. Deleting a record
 * that a probe has passed (flag CHAINED) leaves a HOLE record instead of a
 * tombstone, so the walk of the other key still reaches it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server.h"

void server_wait_compaction(void);
void server_wait_measure(void);
static int flush_db(server_db *d);

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

const char *store_error(int code) {
    static char buf[600];
    const char *detail = simdr_last_error();
    snprintf(buf, sizeof buf, "ERR storage error: %s%s%.500s", simdr_strerror(code),
             detail[0] ? ": " : "", detail);
    return buf;
}

void ks_note_write(server_db *d, int rc) {
    if (d && rc == SIMDR_EFAILED) d->failed = 1;
    /* Only the file's failures: a bad argument, a missing key or memory
     * say nothing about whether the next write can be stored. */
    if (rc && rc != SIMDR_EIO && rc != SIMDR_ENOSPC && rc != SIMDR_EFAILED &&
        rc != SIMDR_EACCES && rc != SIMDR_EREADONLY)
        return;
    if (rc) {
        if (!srv.write_error)
            server_log(LOG_WARNING_, "writes to the store files fail (%s): write commands are "
                       "refused with MISCONF, and tried again every %d ms",
                       simdr_strerror(rc), WRITE_RETRY_MS);
        srv.write_error = rc;
        srv.write_error_ms = now_ms();
        srv.write_errors++;
    } else if (srv.write_error) {
        server_log(LOG_NOTICE_, "writes to the store files succeed again");
        srv.write_error = 0;
    }
}

int record_parse(const void *data, size_t size, record_view *out) {
    const uint8_t *p = data;
    if (size < RECORD_HEADER || p[0] != RECORD_MAGIC0 || p[1] != RECORD_MAGIC1 ||
        p[2] != RECORD_VERSION)
        return 0;
    uint32_t klen = get_u32(p + 4);
    if (klen > size - RECORD_HEADER) return 0;
    out->flags = p[3];
    out->expire_ms = load_u64le(p + 8);
    out->key = p + RECORD_HEADER;
    out->key_len = klen;
    out->value = p + RECORD_HEADER + klen;
    out->value_len = size - RECORD_HEADER - klen;
    return 1;
}

static void record_header(uint8_t *h, size_t klen, uint64_t expire_ms, uint8_t flags) {
    h[0] = RECORD_MAGIC0;
    h[1] = RECORD_MAGIC1;
    h[2] = RECORD_VERSION;
    h[3] = flags;
    put_u32(h + 4, (uint32_t)klen);
    put_u64(h + 8, expire_ms);
}

/* The engine key whose hash is the slot's: the key itself for slot 0. */
static uint8_t *slot_key(const void *key, size_t klen, int slot, size_t *len) {
    static const uint8_t tag[5] = {0xFF, 's', 'l', 'o', 't'};
    uint8_t *k = malloc(klen + 6);
    if (!k) return NULL;
    memcpy(k, key, klen);
    memcpy(k + klen, tag, 5);
    k[klen + 5] = (uint8_t)slot;
    *len = klen + 6;
    return k;
}

/* Test-only (--debug-slot-hash-bits): fewer hash bits make collisions common
 * so the probing is exercised. Then no key is at its engine hash, so MGET
 * skips the batch read by key. */
uint64_t slot_hash_mask = UINT64_MAX;

uint64_t slot_hash(const void *key, size_t klen, int slot) {
    if (slot == 0) return simdr_hash_key(key, klen) & slot_hash_mask;
    size_t n;
    uint8_t *k = slot_key(key, klen, slot, &n);
    if (!k) return 0;
    uint64_t h = simdr_hash_key(k, n) & slot_hash_mask;
    free(k);
    return h;
}

int db_append_mode(void) {
    /* Durability always syncs every turn with writes: appends into zeros
     * written ahead make each of those fdatasyncs a data write and a device
     * flush, without the journal commit a longer file needs (the engine's
     * SIMDR_APPEND_ZEROED). The other modes sync too rarely to pay for
     * writing every byte twice. */
    return srv.cfg.durability == DURABILITY_ALWAYS && srv.cfg.preallocate ? SIMDR_APPEND_ZEROED
                                                                         : SIMDR_APPEND_WRITE;
}

void db_apply_append_mode(void) {
    for (int i = 0; i < SERVER_DBS; i++) {
        server_db *d = &srv.db[i];
        if (!d->store || d->read_only || d->failed) continue;
        if (simdr_set_append_mode(d->store, db_append_mode()) != SIMDR_OK)
            server_log(LOG_WARNING_, "db %d: changing the append mode: %s", i, simdr_last_error());
    }
}

static int open_store(server_db *d, int mode) {
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = mode;
    o.append_mode = db_append_mode();
    o.durability = SIMDR_SYNC_NONE; /* the server syncs: per turn or per second */
    o.file_mode = 0600;
    return simdr_open(&d->store, d->path, &o);
}

int db_open_existing(server_db *d) {
    if (d->store) return 0;
    struct stat st;
    if (stat(d->path, &st) != 0) return 0;
    d->may_have_ttl = 1;
    return open_store(d, SIMDR_OPEN_EXISTING);
}

void ks_reopen_failed(void) {
    long long now = 0;
    for (int i = 0; i < SERVER_DBS; i++) {
        server_db *d = &srv.db[i];
        if (!d->failed) continue;
        if (!now) now = now_ms();
        int try_write = now >= d->reopen_after_ms;
        /* db_close would stop a running compaction, of every store; the
         * failed handle's own compaction fails by itself soon enough, and
         * the others' go on. */
        if (srv.compacting || (d->read_only && !try_write)) continue;
        uint64_t before = d->store ? simdr_count(d->store) : 0;
        replica_store_closing();
        db_close(d);
        d->may_have_ttl = 1;
        int rc = SIMDR_EFAILED;
        if (try_write) {
            d->reopen_after_ms = now + WRITE_RETRY_MS;
            rc = open_store(d, SIMDR_OPEN_EXISTING);
        }
        if (rc == 0) {
            d->failed = d->read_only = 0;
            d->dirty = 1; /* what the recovery kept is synced at the next sync */
            server_log(LOG_WARNING_, "%s reopened after a failed write or sync: %llu keys "
                       "(%llu served by the failed handle)", d->path,
                       (unsigned long long)simdr_count(d->store), (unsigned long long)before);
            replica_store_reopened();
            continue;
        }
        if (try_write)
            server_log(LOG_WARNING_, "reopening %s for writing failed: %s (%s)", d->path,
                       simdr_strerror(rc), simdr_last_error());
        rc = open_store(d, SIMDR_OPEN_READONLY);
        if (rc) {
            d->store = NULL;
            server_log(LOG_WARNING_, "opening %s read-only failed too: %s", d->path,
                       simdr_strerror(rc));
        }
        d->read_only = 1;
        d->reopen_after_ms = d->reopen_after_ms > now ? d->reopen_after_ms : now + WRITE_RETRY_MS;
        server_log(LOG_WARNING_, "%s open read-only until it can be opened for writing (every "
                   "%d ms)", d->path, WRITE_RETRY_MS);
    }
}

/* Once the store refused a batch of this turn, the turn's later writes are
 * refused too: a command that went on writing after its earlier records
 * were refused (an MSET larger than one batch, a transaction) would leave
 * its later records stored around a hole. */
static int turn_refuses_writes(void) {
    if (!srv.write_failed) return 0;
    return srv.write_error ? srv.write_error : SIMDR_EIO;
}

int db_store_for_write(server_db *d, simdr_store **out) {
    int rc = turn_refuses_writes();
    if (rc) return rc;
    if (!d->store && (rc = open_store(d, SIMDR_OPEN_CREATE))) return rc;
    *out = d->store;
    return 0;
}

static void db_drop_cursors(server_db *d) {
    d->expire_cursor = 0;
    d->ttl_keys_in_walk = 0; /* the walk starts over */
}

void db_close(server_db *d) {
    ks_flush_pending();
    server_stop_compaction("a database is being closed");
    server_wait_measure();
    db_drop_cursors(d);
    if (d->store) {
        if (d->dirty) simdr_sync(d->store);
        int rc = simdr_close(d->store);
        if (rc) server_log(LOG_WARNING_, "closing %s: %s", d->path, simdr_strerror(rc));
        d->store = NULL;
        d->dirty = 0;
    }
    d->garbage = 0;
    d->size_at_garbage_check = 0;
}

static void unlink_beside(const char *path, const char *suffix) {
    char p[4300];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    unlink(p);
}

int db_flush(server_db *d) {
    watch_touch_db(d->index, -1);
    ks_flush_pending();
    /* The file is removed while this server holds its writer lock: a file
     * it has not opened (or holds read-only) may be another process's
     * writable store, whose writes the removal would throw away. A running
     * compaction stops first (its end would put a file back at the path). */
    server_stop_compaction("a database is being flushed");
    server_wait_measure();
    if (d->store && d->read_only) db_close(d);
    if (!d->store) {
        int rc = db_open_existing(d);
        if (rc == SIMDR_ELOCKED) return rc;
        if (rc) d->store = NULL; /* unreadable here: removed as it is */
    }
    if (unlink(d->path) != 0 && errno != ENOENT) return SIMDR_EIO;
    d->dirty = 0; /* nothing of the removed file needs a sync */
    db_close(d);
    d->ttl_keys = 0;
    unlink_beside(d->path, ".hint");
    /* The side file (".simdr") stays: it is the path's writer lock, and
     * another process still holding the removed file must keep a new store
     * from being created at the path (its compaction would rename its own
     * file over it). Its record names the removed file, so the new store
     * treats it as stale. */
    /* The file is gone: make the removal itself durable. */
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", srv.cfg.dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
}

static int exchange_paths(const char *a, const char *b) {
    int ea = access(a, F_OK) == 0, eb = access(b, F_OK) == 0;
    if (ea && eb) return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
    if (ea) return rename(a, b);
    if (eb) return rename(b, a);
    return 0;
}

/* Closes both databases, exchanges their files (*exchanged = 1 once done)
 * and opens them again. */
static int swap_files(server_db *a, server_db *b, int *exchanged) {
    *exchanged = 0;
    db_close(a);
    db_close(b);
    uint64_t ttl_keys = a->ttl_keys; /* the count goes with its file */
    a->ttl_keys = b->ttl_keys;
    b->ttl_keys = ttl_keys;
    unlink_beside(a->path, ".hint");
    unlink_beside(b->path, ".hint");
    if (exchange_paths(a->path, b->path) != 0) {
        db_open_existing(a);
        db_open_existing(b);
        return SIMDR_EIO;
    }
    *exchanged = 1;
    int fd = open(srv.cfg.dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    int rc = db_open_existing(a);
    int rc2 = db_open_existing(b);
    return rc ? rc : rc2;
}

int db_swap(server_db *a, server_db *b) {
    watch_touch_db(a->index, b->index);
    watch_touch_db(b->index, a->index);
    ks_flush_pending();
    /* A file the server has not opened (created by another program, or left
     * unopened by a failed open) may be held for writing by another process:
     * find out before anything changes, so that an error reply means the
     * databases are as they were. */
    int rc = db_open_existing(a);
    if (rc == 0) rc = db_open_existing(b);
    if (rc) return rc;
    int exchanged;
    rc = swap_files(a, b, &exchanged);
    /* Another writer took a file in the moment neither was open here: put the
     * files back (best effort) rather than answer an error for a swap done. */
    if (rc && exchanged) swap_files(a, b, &exchanged);
    return rc;
}

uint64_t db_size(server_db *d) {
    flush_db(d);
    return d->store ? simdr_count(d->store) : 0;
}

/* ---- the writes of a turn: one batch append ----
 *
 * A record of up to PENDING_MAX_RECORD bytes is not appended at once: it is
 * copied into the database's pending batch, and every pending batch goes to
 * the engine as one simdr_write_batch_hashed (one write system call) at the
 * end of the event-loop turn, before the durability sync and before any reply
 * is sent. The batch collects the writes of all clients of the turn, and
 * their deletes: an item with no bytes is a tombstone, so a command's put and
 * delete (RENAME) are stored or refused together.
 *
 * Lookups see pending records first (the overlay, by slot hash; a pending
 * tombstone reads as an empty slot), so a read after a write in the same
 * turn sees it. Anything that reads the engine other than by ks_lookup
 * (iteration, counts, WATCH offsets, batch reads, syncs, compaction) runs
 * ks_flush_pending() first.
 *
 * A flush does not free the bytes of the records it wrote: a command may
 * still hold a ks_ref into them (a lookup, then a write that flushes). They
 * are recycled at ks_pending_safe_point(), between commands. */
#define PENDING_MAX_RECORD (64 * 1024)
#define PENDING_CHUNK (256 * 1024)
#define PENDING_MAX_ITEMS 4096
#define PENDING_MAX_BYTES (4 * 1024 * 1024)
#define PENDING_SPARE_CHUNKS 16

typedef struct pending_chunk {
    struct pending_chunk *next;
    size_t used;
    uint8_t data[PENDING_CHUNK];
} pending_chunk;

typedef struct pending_batch {
    simdr_hashed_kv *items;
    size_t n, cap, bytes;
    uint32_t *slots; /* open addressing by key hash: item index + 1, 0 = empty */
    size_t nslots;   /* a power of two, at least twice cap */
    pending_chunk *chunks;
} pending_batch;

static pending_batch pending[SERVER_DBS];
static pending_chunk *retired_chunks, *spare_chunks;
static int spare_count;
static int pending_dbs; /* databases with a non-empty batch */

static size_t overlay_pos(uint64_t hash, size_t nslots) {
    return (size_t)((hash * 0x9E3779B97F4A7C15ULL) >> 17) & (nslots - 1);
}

/* The newest pending record of the slot hash, or NULL. */
static const simdr_hashed_kv *pending_find(server_db *d, uint64_t hash) {
    pending_batch *b = &pending[d->index];
    if (!b->n) return NULL;
    for (size_t i = overlay_pos(hash, b->nslots);; i = (i + 1) & (b->nslots - 1)) {
        uint32_t v = b->slots[i];
        if (!v) return NULL;
        if (b->items[v - 1].key_hash == hash) return &b->items[v - 1];
    }
}

static pending_chunk *chunk_get(void) {
    pending_chunk *c = spare_chunks;
    if (c) {
        spare_chunks = c->next;
        spare_count--;
    } else {
        c = malloc(sizeof *c);
        if (!c) return NULL;
    }
    c->next = NULL;
    c->used = 0;
    return c;
}

void ks_pending_safe_point(void) {
    while (retired_chunks) {
        pending_chunk *c = retired_chunks;
        retired_chunks = c->next;
        if (spare_count < PENDING_SPARE_CHUNKS) {
            c->next = spare_chunks;
            spare_chunks = c;
            spare_count++;
        } else {
            free(c);
        }
    }
}

static int flush_db(server_db *d) {
    pending_batch *b = &pending[d->index];
    if (!b->n) return 0;
    int rc = simdr_write_batch_hashed(d->store, b->items, b->n, NULL);
    if (rc) {
        server_log(LOG_WARNING_, "writing %zu records to %s failed: %s (%s)", b->n, d->path,
                   simdr_strerror(rc), simdr_last_error());
        srv.write_failed = 1;
    }
    ks_note_write(d, rc);
    srv.batch_appends++;
    srv.batched_records += b->n;
    b->n = 0;
    b->bytes = 0;
    memset(b->slots, 0, b->nslots * sizeof *b->slots);
    pending_chunk *c = b->chunks;
    while (c) {
        pending_chunk *next = c->next;
        c->next = retired_chunks;
        retired_chunks = c;
        c = next;
    }
    b->chunks = NULL;
    pending_dbs--;
    return rc;
}

int ks_flush_pending(void) {
    int first = 0;
    for (int i = 0; pending_dbs > 0 && i < SERVER_DBS; i++) {
        int rc = flush_db(&srv.db[i]);
        if (rc && !first) first = rc;
    }
    return first;
}

/* Between commands: a batch past its limits goes out now. Within a command
 * a batch only grows, so that a command's records are stored or refused
 * together (an MSET of more pairs than a batch holds). */
void ks_pending_command_start(void) {
    for (int i = 0; pending_dbs > 0 && i < SERVER_DBS; i++) {
        pending_batch *b = &pending[i];
        if (b->n >= PENDING_MAX_ITEMS || b->bytes >= PENDING_MAX_BYTES) flush_db(&srv.db[i]);
    }
}

/* Room for `items` more items in d's batch (it grows: see
 * ks_pending_command_start): 0, SIMDR_ENOMEM, or the error of a batch the
 * store refused in this turn. */
static int pending_room(server_db *d, size_t items) {
    pending_batch *b = &pending[d->index];
    int rc = turn_refuses_writes();
    if (rc) return rc;
    while (b->n + items > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        simdr_hashed_kv *grown = realloc(b->items, cap * sizeof *grown);
        if (!grown) return SIMDR_ENOMEM;
        b->items = grown;
        uint32_t *slots = calloc(cap * 2, sizeof *slots);
        if (!slots) return SIMDR_ENOMEM;
        free(b->slots);
        b->slots = slots;
        b->nslots = cap * 2;
        b->cap = cap;
        for (size_t i = 0; i < b->n; i++) { /* re-index (newest last wins) */
            size_t j = overlay_pos(b->items[i].key_hash, b->nslots);
            while (b->slots[j] && b->items[b->slots[j] - 1].key_hash != b->items[i].key_hash)
                j = (j + 1) & (b->nslots - 1);
            b->slots[j] = (uint32_t)(i + 1);
        }
    }
    return 0;
}

/* Room for one more item (pending_room), then the record's bytes: NULL when
 * out of memory. */
static uint8_t *pending_reserve(server_db *d, size_t total) {
    pending_batch *b = &pending[d->index];
    if (pending_room(d, 1)) return NULL;
    if (!b->chunks || PENDING_CHUNK - b->chunks->used < total) {
        pending_chunk *c = chunk_get();
        if (!c) return NULL;
        c->next = b->chunks;
        b->chunks = c;
    }
    uint8_t *p = b->chunks->data + b->chunks->used;
    b->chunks->used += (total + 7) & ~(size_t)7;
    if (b->chunks->used > PENDING_CHUNK) b->chunks->used = PENDING_CHUNK;
    return p;
}

static void pending_commit(server_db *d, uint64_t hash, const uint8_t *rec, size_t total) {
    pending_batch *b = &pending[d->index];
    if (!b->n) pending_dbs++;
    size_t idx = b->n++;
    b->items[idx].key_hash = hash;
    b->items[idx].value = rec;
    b->items[idx].value_len = total;
    b->bytes += total;
    size_t j = overlay_pos(hash, b->nslots);
    while (b->slots[j] && b->items[b->slots[j] - 1].key_hash != hash) j = (j + 1) & (b->nslots - 1);
    b->slots[j] = (uint32_t)(idx + 1);
}

/* A delete in the turn's batch: a tombstone, appended with the records. */
static int pending_tombstone(server_db *d, uint64_t hash) {
    int rc = pending_room(d, 1);
    if (rc) return rc;
    pending_commit(d, hash, NULL, 0);
    return 0;
}

static int served_pending; /* ks_take_served_pending */

int ks_take_served_pending(void) {
    int v = served_pending;
    served_pending = 0;
    return v;
}

/* The newest record of a slot hash: pending first, then the engine. On 0,
 * data and size describe it and entry is held (NULL for a pending record). */
static int slot_get(server_db *d, uint64_t hash, simdr_entry **entry, const void **data,
                    size_t *size) {
    const simdr_hashed_kv *kv = pending_find(d, hash);
    if (kv) {
        served_pending = 1;
        if (!kv->value) return SIMDR_NOTFOUND; /* a pending tombstone */
        *entry = NULL;
        *data = kv->value;
        *size = kv->value_len;
        return 0;
    }
    int rc = simdr_get_hashed(d->store, hash, entry);
    if (rc) return rc;
    *data = simdr_entry_data(*entry);
    *size = simdr_entry_size(*entry);
    return 0;
}

void ks_mark_dirty(server_db *d) {
    d->dirty = 1;
    srv.any_write_this_turn = 1;
}

void ks_ref_release(ks_ref *ref) {
    if (ref->entry) simdr_entry_release(ref->entry);
    ref->entry = NULL;
    ref->found = 0;
}

int ks_lookup(server_db *d, const void *key, size_t klen, long long now, ks_ref *ref) {
    memset(ref, 0, sizeof *ref);
    ref->slot = -1;
    if (!d->store) {
        ref->slot = 0;
        return 0;
    }
    uint32_t passed = 0;
    for (int s = 0; s < SLOT_PROBES; s++) {
        simdr_entry *e;
        const void *data;
        size_t size;
        int rc = slot_get(d, slot_hash(key, klen, s), &e, &data, &size);
        if (rc == SIMDR_NOTFOUND) {
            if (ref->slot < 0) {
                ref->slot = s;
                ref->pass_mask = passed;
            }
            return 0;
        }
        if (rc) return rc;
        record_view rv;
        int ours = record_parse(data, size, &rv);
        if (ours && (rv.flags & RECORD_FLAG_HOLE)) {
            if (ref->slot < 0) {
                ref->slot = s;
                ref->slot_flags = RECORD_FLAG_CHAINED;
                ref->pass_mask = passed;
            }
            if (e) simdr_entry_release(e);
            continue;
        }
        if (ours && rv.key_len == klen && memcmp(rv.key, key, klen) == 0) {
            ref->found = 1;
            ref->entry = e;
            ref->rec = rv;
            ref->slot = s;
            ref->slot_flags = rv.flags & RECORD_FLAG_CHAINED;
            if (record_expired(&rv, now) && replica_is_replica()) {
                /* A replica's files follow the primary's byte for byte: the
                 * primary deletes it, the replica only hides it. */
                ks_ref_release(ref);
                ref->found = 0;
                return 0;
            }
            if (record_expired(&rv, now)) {
                int drc = ks_delete(d, ref, key, klen);
                ks_ref_release(ref);
                ref->slot_flags = rv.flags & RECORD_FLAG_CHAINED;
                if (drc) return drc;
                d->expired_keys++;
                srv.expired_keys++;
                return 0;
            }
            return 1;
        }
        /* Another key (or a foreign entry) sits here: probe on. */
        if (ours && !(rv.flags & RECORD_FLAG_CHAINED)) passed |= 1u << s;
        if (e) simdr_entry_release(e);
    }
    if (ref->slot < 0) return SIMDR_ETOOBIG; /* 16 colliding keys: refuse */
    return 0;
}

/* Appends the record as one entry; the value comes from iov. */
struct iov_source {
    const struct iovec *iov;
    int niov, i;
    size_t off;
};

static int64_t iov_read(void *ctx, void *buf, size_t cap) {
    struct iov_source *s = ctx;
    size_t got = 0;
    while (got < cap && s->i < s->niov) {
        const struct iovec *v = &s->iov[s->i];
        size_t n = v->iov_len - s->off;
        if (n > cap - got) n = cap - got;
        memcpy((uint8_t *)buf + got, (const uint8_t *)v->iov_base + s->off, n);
        got += n;
        s->off += n;
        if (s->off == v->iov_len) {
            s->i++;
            s->off = 0;
        }
    }
    return (int64_t)got;
}

static int put_record(server_db *d, uint64_t hash, const void *key, size_t klen,
                      const struct iovec *val, int nval, uint64_t expire_ms, uint8_t flags) {
    simdr_store *st;
    int rc = db_store_for_write(d, &st);
    if (rc) return rc;
    if (expire_ms) d->may_have_ttl = d->ttl_written_in_walk = 1;
    uint8_t hdr[RECORD_HEADER];
    record_header(hdr, klen, expire_ms, flags);
    struct iovec iov[8];
    int n = 0;
    iov[n].iov_base = hdr;
    iov[n++].iov_len = RECORD_HEADER;
    if (klen) {
        iov[n].iov_base = (void *)key;
        iov[n++].iov_len = klen;
    }
    size_t total = RECORD_HEADER + klen;
    for (int i = 0; i < nval && n < 8; i++) {
        if (!val[i].iov_len) continue;
        iov[n++] = val[i];
        total += val[i].iov_len;
    }
    if (total <= PENDING_MAX_RECORD) {
        uint8_t *rec = pending_reserve(d, total);
        if (!rec) return SIMDR_ENOMEM;
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            memcpy(rec + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        pending_commit(d, hash, rec, total);
        ks_mark_dirty(d);
        return 0;
    }
    /* A big value streams straight into the store, after the pending
     * records (order of appends = order of commands). */
    if ((rc = flush_db(d))) return rc;
    struct iov_source src = {iov, n, 0, 0};
    rc = simdr_put_stream_hashed(st, hash, iov_read, &src, NULL);
    ks_note_write(d, rc);
    if (rc == 0) ks_mark_dirty(d);
    return rc;
}

/* Marks the records of other keys that a new key's probe passed. */
static int mark_chained(server_db *d, const void *key, size_t klen, uint32_t mask) {
    for (int s = 0; s < SLOT_PROBES; s++) {
        if (!(mask & (1u << s))) continue;
        uint64_t h = slot_hash(key, klen, s);
        simdr_entry *e;
        const void *data;
        size_t size;
        int rc = slot_get(d, h, &e, &data, &size);
        if (rc == SIMDR_NOTFOUND) continue;
        if (rc) return rc;
        record_view rv;
        if (record_parse(data, size, &rv)) {
            struct iovec v = {(void *)rv.value, rv.value_len};
            rc = put_record(d, h, rv.key, rv.key_len, &v, 1, rv.expire_ms,
                            (uint8_t)(rv.flags | RECORD_FLAG_CHAINED));
            if (rc == 0) watch_record_moved(d->index, rv.key, rv.key_len);
        }
        if (e) simdr_entry_release(e);
        if (rc) return rc;
    }
    return 0;
}

int ks_write(server_db *d, ks_ref *ref, const void *key, size_t klen, const struct iovec *iov,
             int niov, uint64_t expire_ms) {
    if (klen > UINT32_MAX) return SIMDR_ETOOBIG;
    watch_touch_key(d->index, key, klen);
    if (!ref->found && ref->pass_mask) {
        int rc = mark_chained(d, key, klen, ref->pass_mask);
        if (rc) return rc;
        ref->pass_mask = 0;
    }
    return put_record(d, slot_hash(key, klen, ref->slot), key, klen, iov, niov, expire_ms,
                      ref->slot_flags & RECORD_FLAG_CHAINED);
}

struct pair_slot {
    uint64_t hash;
    size_t pair;
};

static int cmp_pair_slot(const void *a, const void *b) {
    const struct pair_slot *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

/* 1 when two different keys among the pairs would be written at the same
 * slot hash (the same key twice is one slot, the later value winning). */
static int pairs_share_a_slot(char **kv, size_t *lens, const ks_ref *refs, size_t n) {
    struct pair_slot *slots = malloc(n * sizeof *slots);
    if (!slots) return 1;
    for (size_t i = 0; i < n; i++)
        slots[i] = (struct pair_slot){slot_hash(kv[2 * i], lens[2 * i], refs[i].slot), i};
    qsort(slots, n, sizeof *slots, cmp_pair_slot);
    int shared = 0;
    for (size_t i = 1; i < n && !shared; i++) {
        size_t a = slots[i - 1].pair, b = slots[i].pair;
        shared = slots[i - 1].hash == slots[i].hash &&
                 (lens[2 * a] != lens[2 * b] || memcmp(kv[2 * a], kv[2 * b], lens[2 * a]) != 0);
    }
    free(slots);
    return shared;
}

/* MSET's pairs as one append when any record is too big for the pending
 * batch (which would stream it alone, after the pending records: an MSET of
 * several appends, the first ones kept when a later one fails on a full
 * disk, its reply an error). Sized before any lookup, so an MSET of small
 * values costs nothing more here. The turn's pending records go first
 * (order of appends = order of commands), then every record of the pairs,
 * built in one block, in one simdr_put_batch_hashed. */
int ks_write_pairs_at_once(server_db *d, char **kv, size_t *lens, size_t n, long long now) {
    size_t total = 0;
    int big = 0;
    for (size_t i = 0; i < n; i++) {
        size_t klen = lens[2 * i], vlen = lens[2 * i + 1];
        size_t rec = RECORD_HEADER + klen + vlen;
        if (klen > UINT32_MAX || rec < vlen || total + rec < total) return 1;
        if (rec > PENDING_MAX_RECORD) big = 1;
        total += rec;
    }
    if (!big) return 1;
    ks_ref *refs = calloc(n, sizeof *refs);
    simdr_hashed_kv *items = malloc(n * sizeof *items);
    uint8_t *block = malloc(total);
    int rc = refs && items && block ? 0 : SIMDR_ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int found = ks_lookup(d, kv[2 * i], lens[2 * i], now, &refs[i]);
        ks_ref_release(&refs[i]);
        if (found < 0) rc = found;
        else if (refs[i].pass_mask) rc = 1; /* a collision chain to mark: ks_write's way */
    }
    /* Two keys of this MSET looked up before either is written get the same
     * free slot when their hashes collide: written one by one instead, each
     * after its own lookup. */
    if (rc == 0 && pairs_share_a_slot(kv, lens, refs, n)) rc = 1;
    simdr_store *st = NULL;
    if (rc == 0) rc = db_store_for_write(d, &st);
    size_t off = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *key = kv[2 * i];
        size_t klen = lens[2 * i], vlen = lens[2 * i + 1];
        uint8_t *rec = block + off;
        record_header(rec, klen, 0, refs[i].slot_flags & RECORD_FLAG_CHAINED);
        memcpy(rec + RECORD_HEADER, key, klen);
        memcpy(rec + RECORD_HEADER + klen, kv[2 * i + 1], vlen);
        items[i] = (simdr_hashed_kv){slot_hash(key, klen, refs[i].slot), rec,
                                     RECORD_HEADER + klen + vlen};
        off += RECORD_HEADER + klen + vlen;
        watch_touch_key(d->index, key, klen);
    }
    if (rc == 0 && (rc = flush_db(d)) == 0) { /* flush_db notes its own outcome */
        rc = simdr_put_batch_hashed(st, items, n, NULL);
        ks_note_write(d, rc);
        if (rc == 0) ks_mark_dirty(d);
    }
    free(refs);
    free(items);
    free(block);
    return rc;
}

/* A spooled value: the record's header and key from memory, then the value
 * read from a file (pread, constant memory). */
struct fd_source {
    struct iov_source head;
    int fd;
    uint64_t off, len;
};

static int64_t fd_read(void *ctx, void *buf, size_t cap) {
    struct fd_source *s = ctx;
    int64_t got = iov_read(&s->head, buf, cap);
    if (got > 0) return got;
    if (s->off == s->len) return 0;
    size_t want = cap;
    if (want > s->len - s->off) want = (size_t)(s->len - s->off);
    ssize_t n;
    do {
        n = pread(s->fd, buf, want, (off_t)s->off);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return -1; /* the file is shorter than it should be: keep nothing */
    s->off += (uint64_t)n;
    return n;
}

int ks_write_fd(server_db *d, ks_ref *ref, const void *key, size_t klen, int fd, uint64_t len,
                uint64_t expire_ms) {
    if (klen > UINT32_MAX) return SIMDR_ETOOBIG;
    watch_touch_key(d->index, key, klen);
    if (!ref->found && ref->pass_mask) {
        int rc = mark_chained(d, key, klen, ref->pass_mask);
        if (rc) return rc;
        ref->pass_mask = 0;
    }
    simdr_store *st;
    int rc = db_store_for_write(d, &st);
    if (rc) return rc;
    if ((rc = flush_db(d))) return rc; /* appends keep the order of the commands */
    if (expire_ms) d->may_have_ttl = d->ttl_written_in_walk = 1;
    uint8_t hdr[RECORD_HEADER];
    record_header(hdr, klen, expire_ms, ref->slot_flags & RECORD_FLAG_CHAINED);
    struct iovec iov[2] = {{hdr, RECORD_HEADER}, {(void *)key, klen}};
    struct fd_source src = {{iov, klen ? 2 : 1, 0, 0}, fd, 0, len};
    rc = simdr_put_stream_hashed(st, slot_hash(key, klen, ref->slot), fd_read, &src, NULL);
    ks_note_write(d, rc);
    if (rc == 0) ks_mark_dirty(d);
    return rc;
}

int ks_delete(server_db *d, ks_ref *ref, const void *key, size_t klen) {
    int rc;
    uint64_t hash = slot_hash(key, klen, ref->slot);
    if (ref->slot_flags & RECORD_FLAG_CHAINED) {
        /* A probe chain passes this slot: a hole keeps it linked. */
        rc = put_record(d, hash, NULL, 0, NULL, 0, 0, RECORD_FLAG_CHAINED | RECORD_FLAG_HOLE);
    } else {
        rc = pending_tombstone(d, hash);
    }
    if (rc == 0) {
        ks_mark_dirty(d);
        watch_touch_key(d->index, key, klen);
    }
    return rc;
}

int ks_rename(server_db *d, ks_ref *src, const void *old_key, size_t old_len, ks_ref *dst,
              const void *new_key, size_t new_len) {
    if (new_len > UINT32_MAX) return SIMDR_ETOOBIG;
    size_t vlen = src->rec.value_len;
    size_t total = RECORD_HEADER + new_len + vlen;
    if (total < vlen) return SIMDR_ETOOBIG;
    int rc;
    /* The marks of the new key's probe chain go first, on their own: only
     * the two writes of the rename must not be split. */
    if (!dst->found && dst->pass_mask) {
        if ((rc = mark_chained(d, new_key, new_len, dst->pass_mask))) return rc;
        /* The old key's record may be one of those marked: its delete must
         * then leave a hole, not a tombstone that would cut the new key's
         * probe chain (src's flags were read before the marks). */
        uint64_t src_hash = slot_hash(old_key, old_len, src->slot);
        for (int s = 0; s < SLOT_PROBES; s++)
            if ((dst->pass_mask & (1u << s)) && slot_hash(new_key, new_len, s) == src_hash)
                src->slot_flags |= RECORD_FLAG_CHAINED;
        dst->pass_mask = 0;
    }
    struct iovec v = {(void *)src->rec.value, vlen};
    if (total <= PENDING_MAX_RECORD) {
        /* Both in the turn's batch (it is not flushed within a command). */
        if ((rc = pending_room(d, 2))) return rc;
        if ((rc = ks_write(d, dst, new_key, new_len, &v, 1, src->rec.expire_ms))) return rc;
        return ks_delete(d, src, old_key, old_len);
    }
    /* Too big for the batch: the record is built in memory and appended
     * with the delete (a tombstone, or a hole where a probe chain passes). */
    simdr_store *st;
    if ((rc = db_store_for_write(d, &st))) return rc;
    uint8_t hole[RECORD_HEADER];
    uint8_t *block = malloc(total);
    if (!block) return SIMDR_ENOMEM;
    record_header(block, new_len, src->rec.expire_ms, dst->slot_flags & RECORD_FLAG_CHAINED);
    memcpy(block + RECORD_HEADER, new_key, new_len);
    memcpy(block + RECORD_HEADER + new_len, src->rec.value, vlen);
    simdr_hashed_kv items[2] = {{slot_hash(new_key, new_len, dst->slot), block, total},
                                {slot_hash(old_key, old_len, src->slot), NULL, 0}};
    if (src->slot_flags & RECORD_FLAG_CHAINED) {
        record_header(hole, 0, 0, RECORD_FLAG_CHAINED | RECORD_FLAG_HOLE);
        items[1].value = hole;
        items[1].value_len = RECORD_HEADER;
    }
    if ((rc = flush_db(d)) == 0) { /* flush_db notes its own outcome */
        rc = simdr_write_batch_hashed(st, items, 2, NULL);
        ks_note_write(d, rc);
    }
    free(block);
    if (rc) return rc;
    if (src->rec.expire_ms) d->may_have_ttl = d->ttl_written_in_walk = 1;
    watch_touch_key(d->index, new_key, new_len);
    watch_touch_key(d->index, old_key, old_len);
    ks_mark_dirty(d);
    return 0;
}

int ks_hashes_in_range(simdr_store *s, uint64_t from, uint64_t to, uint64_t **out, size_t *n) {
    size_t cap = 64;
    uint64_t *h = NULL;
    for (;;) {
        uint64_t *g = realloc(h, cap * sizeof *h);
        if (!g) {
            free(h);
            return SIMDR_ENOMEM;
        }
        h = g;
        int64_t got = simdr_hashes_in_range(s, from, to, h, cap);
        if (got < 0) {
            free(h);
            return (int)got;
        }
        if ((uint64_t)got <= cap) {
            *out = h;
            *n = (size_t)got;
            return 0;
        }
        cap = (size_t)got + 64; /* keys came meanwhile: ask again with room for them */
    }
}

/* Examines about budget records of each database a tick, from where the last
 * tick stopped, in the index's hash order (simdr_hashes_in_range: no
 * snapshot to sort at the start of a walk, no old map held by one across
 * compactions); expired ones are deleted through the ordinary lookup. */
void ks_active_expire(long long now, int budget) {
    ks_flush_pending();
    for (int i = 0; i < SERVER_DBS; i++) {
        server_db *d = &srv.db[i];
        uint64_t total = d->store ? simdr_count(d->store) : 0;
        if (!d->may_have_ttl || total == 0) continue;
        if (d->expire_cursor == 0) d->ttl_written_in_walk = 0, d->ttl_keys_in_walk = 0; /* a walk starts */
        uint64_t from = d->expire_cursor;
        uint64_t to =
            ks_range_end(from, ks_range_width(total, budget > 0 ? (uint64_t)budget : total));
        uint64_t *h = NULL;
        size_t k = 0;
        if (ks_hashes_in_range(d->store, from, to, &h, &k) != 0) continue;
        for (size_t j = 0; j < k; j++) {
            simdr_entry *e;
            if (simdr_get_hashed(d->store, h[j], &e) != 0) continue;
            record_view rv;
            int parsed = record_parse(simdr_entry_data(e), simdr_entry_size(e), &rv);
            if (parsed && rv.expire_ms) d->ttl_written_in_walk = 1; /* seen: walk again */
            char *key = NULL;
            size_t key_len = 0;
            if (parsed && rv.expire_ms && !record_expired(&rv, now) &&
                !(rv.flags & RECORD_FLAG_HOLE))
                d->ttl_keys_in_walk++;
            if (parsed && record_expired(&rv, now) && !(rv.flags & RECORD_FLAG_HOLE)) {
                key_len = rv.key_len;
                key = malloc(key_len ? key_len : 1);
                if (key) memcpy(key, rv.key, key_len);
            }
            simdr_entry_release(e);
            if (!key) continue;
            ks_ref ref;
            if (ks_lookup(d, key, key_len, now, &ref) == 1) ks_ref_release(&ref);
            free(key);
        }
        free(h);
        d->expire_cursor = to == HASH_SPACE ? 0 : to;
        if (to == HASH_SPACE) d->ttl_keys = d->ttl_keys_in_walk;
        /* A whole walk without a TTL, and none written meanwhile: stop walking. */
        if (to == HASH_SPACE && !d->ttl_written_in_walk) d->may_have_ttl = 0;
    }
}
