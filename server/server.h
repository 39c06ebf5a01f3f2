/*
 * server.h - shared state and interfaces of simdr-server, the RESP (Redis
 * protocol) server over simdr stores: configuration, clients, databases, the
 * reply writer and the command table. One event loop thread owns all of it;
 * with --threads N the I/O threads (iothreads.c) touch a client only inside
 * a job the loop thread runs and waits for (net.c).
 */
#ifndef SIMDR_SERVER_H
#define SIMDR_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "resp.h"
#include "simdr.h"

#define SERVER_NAME "simdr-server"
#define SERVER_REDIS_COMPAT "7.0.15"
#define SERVER_DBS 16
#define SERVER_MAX_BINDS 16
#define SERVER_MAX_THREADS 64 /* --threads: I/O threads, the event-loop thread included */

enum durability_mode { DURABILITY_NO = 0, DURABILITY_EVERYSEC = 1, DURABILITY_ALWAYS = 2 };
enum log_level { LOG_DEBUG_ = 0, LOG_VERBOSE_ = 1, LOG_NOTICE_ = 2, LOG_WARNING_ = 3 };

typedef struct server_config {
    char dir[4096];
    char *binds[SERVER_MAX_BINDS];
    int nbinds;
    int port;
    char *requirepass;        /* NULL: no password */
    int durability;           /* enum durability_mode */
    int preallocate;          /* durability always: zeros written ahead of the tail */
    int maxclients;
    long long timeout;        /* idle seconds before a client is closed; 0 = never */
    int auto_compact_percent; /* 0 = off */
    char logfile[4096];       /* "" = stderr */
    int loglevel;
    long long proto_max_bulk_len;
    long long query_buffer_limit;
    long long output_buffer_limit;
    int hz;                   /* background ticks per second */
    int active_expire_effort; /* records examined per tick and database */
    int threads;              /* I/O threads, the event-loop thread included */
    int io_fanout_min;        /* fewer clients in a turn: no fan-out to the I/O threads */
    int io_worker_first;      /* tests only: a worker claims the first client of every job */
} server_config;

/* A copied command, for MULTI queues. */
typedef struct saved_cmd {
    int argc;
    char **argv;
    size_t *lens;
} saved_cmd;

/* A WATCHed key: EXEC aborts when the key's newest record moved (any write
 * appends a new record at a new offset) or appeared/disappeared, and when a
 * FLUSHDB, FLUSHALL or SWAPDB emptied or replaced it (CLIENT_DIRTY_CAS). */
typedef struct watched_key {
    int db;
    char *key;
    size_t len;
    uint64_t mark;  /* end offset of the key's record, 0 when absent */
    uint64_t epoch; /* compaction_epoch() at WATCH: which file mark is an offset in */
} watched_key;

enum client_flags {
    CLIENT_CLOSE_AFTER_REPLY = 1 << 0,
    CLIENT_MULTI = 1 << 1,
    CLIENT_MULTI_ERROR = 1 << 2,
    CLIENT_PENDING = 1 << 3, /* in the after-turn flush list */
    CLIENT_WRITING = 1 << 4, /* write event armed */
    CLIENT_CLOSED = 1 << 5,  /* freed at the end of the turn */
    CLIENT_WROTE = 1 << 6,   /* ran a write command this turn */
    CLIENT_READ_QUEUED = 1 << 7, /* readable: in this turn's read list (--threads > 1) */
    CLIENT_DIRTY_CAS = 1 << 8,   /* a WATCHed key was flushed or swapped: EXEC fails */
    CLIENT_IN_EXEC = 1 << 9,     /* running its EXEC's commands: none may block (WAIT) */
    CLIENT_BLOCKED = 1 << 10,    /* in WAIT: its input is read (a disconnect is seen) but not run */
    CLIENT_SAW_PENDING = 1 << 11 /* a reply of this turn shows a record of the turn's batch, not
                                    yet in the store: withheld (the client closed) if the store
                                    refuses the batch, as the writers' are */
};

typedef struct client {
    uint64_t id;
    int fd;
    unsigned flags;
    struct event *rev, *wev;
    struct evbuffer *out;
    char *qbuf;
    size_t qlen, qcap, qpos;
    resp_parser parser;
    int db;
    int resp;           /* 2 or 3 */
    int authenticated;
    char *name;
    char addr[80], laddr[80];
    long long ctime_ms, last_ms;
    char last_cmd[80]; /* full name, e.g. client|list */
    saved_cmd *mq;
    int mq_len, mq_cap;
    watched_key *watched;
    int nwatched, watch_cap;
    struct client *next, *prev;
    struct client *pending_next;
    /* A big SET value spooled to an unnamed file as it arrives (net.c):
     * spool_fd >= 0 while it does. */
    int spool_fd;
    char *spool_key;
    size_t spool_klen;
    uint64_t spool_len, spool_got; /* value bytes expected, received */
    int spool_crlf;                /* bytes of the final CRLF still to skip */
    int spool_error;               /* errno of a failed write to the file */
    int io_status; /* the outcome of its step in an I/O job (net.c) */
} client;

/* One database: one store file DIR/db-N.simdr, opened when first used. */
typedef struct server_db {
    int index;
    simdr_store *store;
    char path[4200];
    int dirty;            /* written since the last sync */
    uint64_t expire_cursor;  /* active expiry position: low 32 bits of the hash space */
    uint64_t expired_keys;
    /* The active expiry walk runs only while the store may hold a record
     * with a TTL: set by a write with one and by opening a non-empty file,
     * cleared by a full walk that met none (walking costs a sort of every
     * record at each start). */
    int may_have_ttl;
    int ttl_written_in_walk;
    /* Keys with a TTL the walk met: in the walk under way, and in the last
     * complete one (INFO keyspace's "expires"). */
    uint64_t ttl_keys_in_walk, ttl_keys;
    uint64_t size_at_garbage_check; /* file size at the last measure of its garbage */
    uint64_t garbage;               /* bytes a compaction would save, as last measured */
    /* The index's size at the last tick: a growth reads every entry's
     * metadata through the map, and the tick after it unmaps those pages
     * again (release_grown_maps in main.c). */
    uint64_t index_bytes_seen;
    /* The store failed (a sync or a write that could not be undone): its
     * handle refuses writes and has withdrawn what no sync confirmed, until
     * it is reopened (ks_reopen_failed, at the end of a turn or tick). */
    int failed;
    int read_only;             /* opened read-only meanwhile (ks_reopen_failed) */
    long long reopen_after_ms; /* the next attempt to open it for writing */
} server_db;

typedef struct server_state {
    server_config cfg;
    struct event_base *base;
    struct event *listeners[SERVER_MAX_BINDS * 2];
    int listen_fds[SERVER_MAX_BINDS * 2];
    int nlisteners;
    struct event *cron_ev, *sigterm_ev, *sigint_ev;
    server_db db[SERVER_DBS];
    client *clients;
    client *pending;
    int nclients;
    uint64_t next_client_id;
    int shutting_down;
    int dir_lock_fd; /* the data directory, flock'ed: one server per directory */
    int any_write_this_turn;
    long long start_ms;
    long long exec_time_ms; /* while an EXEC runs: the time its key lookups use */
    long long last_save_s;
    long long last_sync_ms;
    /* statistics (INFO) */
    uint64_t total_connections, total_commands, rejected_connections;
    uint64_t keyspace_hits, keyspace_misses, expired_keys;
    uint64_t net_in, net_out;
    uint64_t batch_appends, batched_records; /* pending batches written, records in them */
    uint64_t threaded_reads, threaded_writes; /* client steps run as I/O thread jobs */
    uint64_t worker_reads, worker_writes; /* the share of those the workers ran (not the loop thread) */
    uint64_t watched_keys; /* WATCHed keys of all clients (0: deletes skip the watch check) */
    int write_failed; /* a pending batch or a sync failed this turn */
    /* The last store write or sync that failed (a simdr error code, 0 once
     * one succeeds after it), when, and how many failed in all: while it is
     * recent, write commands are refused with MISCONF (store_refuses_writes). */
    int write_error;
    long long write_error_ms;
    uint64_t write_errors;
    /* durability always: group commits, the clients whose replies they
     * released, and the turns that waited for more clients (net.c) */
    uint64_t group_commits, group_commit_clients, group_commit_waits;
    int compacting; /* background compaction running */
    uint64_t compactions;
    char config_file[4096];
} server_state;

extern server_state srv;

/* ---- util.c ---- */
long long now_ms(void);
/* The time that decides whether a key has expired: now, or inside EXEC the
 * time the transaction started (as Redis 7.0, no key expires midway). */
long long key_now_ms(void);
long long now_us(void);
void server_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int server_log_set_file(const char *path, char *err, size_t cap);
int glob_match(const char *pat, size_t plen, const char *s, size_t slen, int nocase);
int parse_ll(const char *s, size_t len, long long *out);
int parse_ld(const char *s, size_t len, long double *out);
int format_ld(char *buf, size_t cap, long double v);
int eq_nocase(const char *a, size_t alen, const char *lit);
int secret_equal(const char *secret, size_t slen, const char *given, size_t glen);

/* ---- reply.c ---- */
void reply_raw(client *c, const void *p, size_t n);
void reply_simple(client *c, const char *s);
void reply_ok(client *c);
void reply_error(client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void reply_int(client *c, long long v);
void reply_bulk(client *c, const void *p, size_t n);
void reply_cstr(client *c, const char *s);
void reply_bulk_ll(client *c, long long v);
/* Takes ownership of entry: its bytes [p, p+n) are sent from the map and the
 * entry released once they have been written. */
void reply_bulk_entry(client *c, simdr_entry *entry, const void *p, size_t n);
void reply_null(client *c);
void reply_null_array(client *c);
void reply_array(client *c, long long n);
void reply_map(client *c, long long n);
void reply_verbatim(client *c, const char *s, size_t n);
void reply_empty_array(client *c);

/* ---- keyspace.c ---- */
#define RECORD_HEADER 16
#define RECORD_MAGIC0 'S'
#define RECORD_MAGIC1 'R'
#define RECORD_VERSION 1
#define RECORD_FLAG_CHAINED 0x01 /* another key's slot probe passed this slot */
#define RECORD_FLAG_HOLE 0x02    /* no key: a deleted chained record */
#define SLOT_PROBES 16

typedef struct record_view {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    uint64_t expire_ms; /* 0 = none */
    uint8_t flags;
} record_view;

/* A key looked up in one database. When found, entry is held (release with
 * ks_ref_release) and rec describes it. When not found, slot is where a new
 * record goes and slot_flags the flags it must keep. */
typedef struct ks_ref {
    int found;
    simdr_entry *entry;
    record_view rec;
    int slot;
    uint8_t slot_flags;
    uint32_t pass_mask; /* slots before `slot` holding other keys not yet marked chained */
} ks_ref;

int record_parse(const void *data, size_t size, record_view *out);
/* Expired once its time is past, as in Redis (at its millisecond PTTL is 0). */
static inline int record_expired(const record_view *rv, long long now) {
    return rv->expire_ms && (long long)rv->expire_ms < now;
}
/* A little-endian u64 of the store's bytes (records, entry metadata). */
static inline uint64_t load_u64le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
uint64_t slot_hash(const void *key, size_t klen, int slot);
extern uint64_t slot_hash_mask;
/* The engine's append mode for the server's stores under the durability
 * configured now, and the same applied to every open store (CONFIG SET). */
int db_append_mode(void);
void db_apply_append_mode(void);
int db_open_existing(server_db *d);
int db_store_for_write(server_db *d, simdr_store **out);
void db_close(server_db *d);
int db_flush(server_db *d);
int db_swap(server_db *a, server_db *b);
uint64_t db_size(server_db *d);
/* 1 found, 0 not found, < 0 simdr error. Expired records are deleted here. */
int ks_lookup(server_db *d, const void *key, size_t klen, long long now, ks_ref *ref);
void ks_ref_release(ks_ref *ref);
/* MSET's n pairs (kv: key, value, key, value...; lens alike) in one append
 * of their own when any is too big for the turn's batch: 0 or the error,
 * all stored or none; 1, nothing written, when they are for ks_write one by
 * one (none too big, or a collision chain to mark first). */
int ks_write_pairs_at_once(server_db *d, char **kv, size_t *lens, size_t n, long long now);
/* Writes key = concat(iov) with expire_ms (0 = none) at ref's slot. */
int ks_write(server_db *d, ks_ref *ref, const void *key, size_t klen, const struct iovec *iov,
             int niov, uint64_t expire_ms);
/* As ks_write, the value being the first len bytes of the file fd. */
int ks_write_fd(server_db *d, ks_ref *ref, const void *key, size_t klen, int fd, uint64_t len,
                uint64_t expire_ms);
/* Deletes the found key of ref (releases nothing). */
int ks_delete(server_db *d, ks_ref *ref, const void *key, size_t klen);
/* RENAME: src's value and expiry under new_key (at dst's slot, dst looked up
 * and released) and src's delete, stored or refused together (one append). */
int ks_rename(server_db *d, ks_ref *src, const void *old_key, size_t old_len, ks_ref *dst,
              const void *new_key, size_t new_len);
/* The turn's pending writes (keyspace.c): written as one batch append per
 * database by ks_flush_pending (a simdr status; failures also set
 * srv.write_failed); ks_pending_safe_point recycles the memory of flushed
 * records and may run only when no ks_ref is held (between commands). */
int ks_flush_pending(void);
/* 1 when a lookup since the last call was answered from the turn's pending
 * batch (a record the store may yet refuse); resets the mark. */
int ks_take_served_pending(void);
void ks_pending_safe_point(void);
/* Before each command: flushes batches past their limits (a batch is never
 * flushed for room within a command). */
void ks_pending_command_start(void);
void ks_active_expire(long long now, int budget);
/* The hash space of simdr_hashes_in_range: a key hash's low 32 bits. */
#define HASH_SPACE (UINT64_C(1) << 32)
/* The width of a stretch of that space expected to hold about want of a
 * database's total records (at least 1; all of it when want >= total). */
static inline uint64_t ks_range_width(uint64_t total, uint64_t want) {
    if (want >= total) return HASH_SPACE;
    uint64_t width = (want << 32) / total; /* want < total < 2^32: no overflow */
    return width ? width : 1;
}
/* The end of the stretch of width that starts at from, cut at the space's end. */
static inline uint64_t ks_range_end(uint64_t from, uint64_t width) {
    return width >= HASH_SPACE - from ? HASH_SPACE : from + width;
}
/* The live slot hashes whose low 32 bits lie in [from, to), into *out
 * (malloc'd, *n of them, in no order): 0, or the engine's error. */
int ks_hashes_in_range(simdr_store *s, uint64_t from, uint64_t to, uint64_t **out, size_t *n);
void ks_mark_dirty(server_db *d);
const char *store_error(int code);
/* Records the outcome of a store write (0 or a simdr error code), or a
 * sync's failure, for the write-error state (srv.write_error), logging when
 * writes start to fail and when they succeed again. */
void ks_note_write(server_db *d, int rc);
/* Reopens every failed store (server_db.failed), as a restart would: the
 * engine's recovery verifies its tail again and serves every entry that
 * holds, and the new handle takes writes. Called at the end of every turn
 * and tick, so no reply of a later turn reads the failed handle, which has
 * withdrawn what no sync confirmed; a look at 16 flags when none failed. Writable opens are tried at
 * most every WRITE_RETRY_MS; meanwhile, and when one fails, the store is
 * open read-only, so reads go on. */
void ks_reopen_failed(void);
/* How long after a failed store write or sync write commands are refused
 * before the next one is tried. */
#define WRITE_RETRY_MS 1000

/* ---- iothreads.c ---- */
/* One client's step of an I/O job; slot is 0 on the event-loop thread and
 * 1..N-1 on the workers. It may touch only that client and slot's own data. */
typedef void (*io_job_fn)(client *c, int slot);
int iothreads_start(int threads);
void iothreads_stop(void);
int iothreads_workers(void);
/* Runs fn on every item, spread over the workers and the calling thread, and
 * returns when all are done: 1 when shared out, 0 when run here alone (no
 * workers, or fewer items than io_fanout_min). */
int iothreads_run(io_job_fn fn, client **items, size_t n);

/* ---- net.c ---- */
int net_listen_all(void);
void net_close_listeners(void);
void client_free(client *c);
void client_schedule_close(client *c);
/* Runs the reads of this turn's readable clients (--threads > 1: on the I/O
 * threads), then their commands in order on the calling thread. */
void net_process_reads(void);
void net_gather_group_commit(void);
void net_gather_free(void);
void net_after_turn(void);
void net_flush_all_blocking(int timeout_ms);
void net_check_timeouts(long long now);
/* type: -1 any, 0 normal, 1 a replica's link, 2 none (master, pubsub). */
int net_kill_clients(uint64_t id, const char *addr, const char *laddr, int type, int skipme,
                     client *me);
/* Appends the client's CLIENT LIST line, newline included. */
void client_info_line(client *c, struct evbuffer *out);

/* ---- commands.c ---- */
typedef void (*command_fn)(client *c, int argc, char **argv, size_t *lens);

enum command_flags {
    CMD_WRITE = 1 << 0,
    CMD_READONLY = 1 << 1,
    CMD_NOAUTH = 1 << 2,  /* allowed before AUTH */
    CMD_NOMULTI = 1 << 3, /* refused inside MULTI (Redis's no_multi: SAVE, SHUTDOWN) */
    CMD_FAST = 1 << 4,
    CMD_ADMIN = 1 << 5,
    CMD_CONTAINER = 1 << 6 /* has subcommands */
};

typedef struct command_def {
    const char *name;
    command_fn fn;
    int arity;
    unsigned flags;
    int first_key, last_key, key_step;
    const char *group;
    const char *summary;
    const struct command_def *subs; /* CMD_CONTAINER: NULL-terminated */
} command_def;

void commands_execute(client *c, int argc, char **argv, size_t *lens);
void commands_reply_info(client *c, const command_def *cmd);
size_t commands_count(void);
const command_def *commands_table(void);
const command_def *command_find(const command_def *table, const char *name, size_t len);
void client_unwatch(client *c);
/* Before the database `emptied` is flushed or swapped with `replaced_with`
 * (-1: none): fails the next EXEC of every client watching a key present in
 * either, as Redis does; a watched key absent from both stays absent. */
void watch_touch_db(int emptied, int replaced_with);
/* A key was deleted (DEL, expiry, RENAME's source, ...): fails the next EXEC
 * of every client watching it. Its record offsets alone cannot tell a key
 * created and deleted again since WATCH from one that stayed absent. */
void watch_touch_key(int db, const void *key, size_t len);
/* A key's record was written again unchanged but for its probe-chain flag
 * (another key's write passed its slot): its watchers compare presence only
 * from now on, as across a compaction, since its offset moved without a
 * change Redis would see. */
void watch_record_moved(int db, const void *key, size_t len);
void client_discard_multi(client *c);
server_db *client_db(client *c);

/* Shared by the command files (commands_string.c): each replies with the
 * error itself and returns -1 when the store fails. */
int cmd_lookup(client *c, server_db *d, const char *key, size_t klen, ks_ref *ref);
int cmd_write(client *c, server_db *d, ks_ref *ref, const char *key, size_t klen,
              const struct iovec *iov, int niov, uint64_t expire_ms);
int cmd_delete(client *c, server_db *d, ks_ref *ref, const char *key, size_t klen);
int cmd_parse_db(client *c, const char *s, size_t len, int *db);
/* MSET's write: argv[1..argc) as key/value pairs (into the turn's pending
 * batch); expiries cleared. A simdr status. */
int store_pairs(server_db *d, int argc, char **argv, size_t *lens);

/* command groups */
#define DECL(n) void n(client *c, int argc, char **argv, size_t *lens)
/* strings */
DECL(cmd_get); DECL(cmd_set); DECL(cmd_setnx); DECL(cmd_setex); DECL(cmd_psetex);
DECL(cmd_getset); DECL(cmd_getdel); DECL(cmd_getex); DECL(cmd_mget); DECL(cmd_mset);
DECL(cmd_msetnx); DECL(cmd_append); DECL(cmd_strlen); DECL(cmd_getrange); DECL(cmd_setrange);
DECL(cmd_incr); DECL(cmd_decr); DECL(cmd_incrby); DECL(cmd_decrby); DECL(cmd_incrbyfloat);
/* keys */
DECL(cmd_del); DECL(cmd_exists); DECL(cmd_type); DECL(cmd_rename); DECL(cmd_renamenx);
DECL(cmd_copy); DECL(cmd_keys); DECL(cmd_scan); DECL(cmd_randomkey); DECL(cmd_dbsize);
DECL(cmd_touch); DECL(cmd_expire); DECL(cmd_pexpire); DECL(cmd_expireat); DECL(cmd_pexpireat);
DECL(cmd_ttl); DECL(cmd_pttl); DECL(cmd_expiretime); DECL(cmd_pexpiretime); DECL(cmd_persist);
/* server and connection */
DECL(cmd_ping); DECL(cmd_echo); DECL(cmd_auth); DECL(cmd_hello); DECL(cmd_quit);
DECL(cmd_select); DECL(cmd_flushdb); DECL(cmd_flushall); DECL(cmd_swapdb); DECL(cmd_info);
DECL(cmd_config_get); DECL(cmd_config_set); DECL(cmd_config_resetstat); DECL(cmd_config_help);
DECL(cmd_client_setname); DECL(cmd_client_getname); DECL(cmd_client_id);
DECL(cmd_client_list); DECL(cmd_client_info); DECL(cmd_client_kill); DECL(cmd_client_help);
DECL(cmd_command); DECL(cmd_command_count); DECL(cmd_command_docs); DECL(cmd_command_info);
DECL(cmd_command_help);
DECL(cmd_save); DECL(cmd_bgsave); DECL(cmd_lastsave); DECL(cmd_bgrewriteaof); DECL(cmd_time);
DECL(cmd_debug_sleep); DECL(cmd_debug_help); DECL(cmd_wait); DECL(cmd_shutdown);
DECL(cmd_reset);
DECL(cmd_multi); DECL(cmd_exec); DECL(cmd_discard); DECL(cmd_watch); DECL(cmd_unwatch);
#undef DECL

/* ---- cluster.c ---- */
/* INFO's Cluster section: the commands that act on one shard only. */
void cluster_info(struct evbuffer *b);

/* ---- replica.c (docs/CLUSTER.md) ---- */
int replica_is_replica(void);
/* Options replicaof HOST PORT, masterauth, masterauth-file: 1 applied, 0 not
 * one of them, -1 bad value (err filled). */
int replica_config_option(const char *name, char **vals, int nvals, char *err, size_t cap);
/* The repl-timeout in force, in seconds (CONFIG GET). */
long long replica_timeout_seconds(void);
/* A replica refuses writes (READONLY) and compaction: 1 when it replied. */
int replica_refuses(client *c, const command_def *cmd);
/* Write commands refused for a while after a store write failed (MISCONF):
 * 1 when it replied. */
int store_refuses_writes(client *c, const command_def *cmd);
/* The same for any write (a spooled SET): 1 when it replied MISCONF. */
int misconf_refuses(client *c);
/* A write this server, a replica, refuses (also inside a transaction queued
 * before it became one: EXEC is then refused whole, as in Redis). */
int replica_forbids(const command_def *cmd);
void replica_wait(client *c, long long numreplicas, long long timeout_ms);
/* A replica's feed or a client blocked in WAIT: the idle timeout spares it,
 * as Redis spares replicas and blocked clients. */
int replica_exempt_from_timeout(client *c);
/* The connection of a replica this server feeds (CLIENT LIST TYPE replica). */
int replica_client_is_feed(client *c);
long long replica_output_allowance(client *c);
/* Clients blocked in WAIT (INFO's blocked_clients). */
int replica_blocked_clients(void);
void replica_client_freed(client *c);
void replica_start(void);
/* A store was reopened after a failure, which may have cut its tail: replicas
 * resume as after a restart of this server (a new run); a replica connects
 * to its primary again from its tails. */
void replica_store_reopened(void);
/* Before a failed store is closed to be reopened: a replica drops its link,
 * which stops a prefix rebuild reading that store. */
void replica_store_closing(void);
void replica_after_turn(int wrote);
/* Queues for every replica what the stores hold now (before a compaction). */
void replica_feed_now(void);
void replica_cron(long long now);
void replica_shutdown(void);
void replica_info(struct evbuffer *b);
void cmd_replicaof(client *c, int argc, char **argv, size_t *lens);
void cmd_replsync(client *c, int argc, char **argv, size_t *lens);
void cmd_replack(client *c, int argc, char **argv, size_t *lens);

/* ---- main.c ---- */
void server_request_shutdown(void);
void server_wait_compaction(void);
/* Asks a running compaction to stop (why goes to the log) and waits for it:
 * what must close a store does not wait for its copy. */
void server_stop_compaction(const char *why);
/* Waits for the background measure of the stores' garbage, if one runs
 * (before a store is closed or replaced). */
void server_wait_measure(void);
int server_sync_all(void);
int server_sync(int wait);
int server_start_compaction(void);
int config_set_param(const char *name, const char *value, char *err, size_t errcap);
/* Writes the value of a CONFIG GET parameter; 0 if unknown. */
int config_get_param(const char *name, char *buf, size_t cap);
extern const char *const config_param_names[];

#endif
