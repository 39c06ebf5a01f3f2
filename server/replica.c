/*
 * replica.c - replication of simdr-server (docs/CLUSTER.md, "Replicas").
 *
 * The store files are their own log: a replica's db-N.simdr is a byte-for-
 * byte prefix of its primary's. The replica connects, authenticates with
 * the primary's password and sends REPLSYNC with, per database, the
 * identity of the primary file it follows (simdr_log_info), its own tail and
 * the 20 metadata bytes ending there. The primary resumes a database from
 * that tail when its file still has those bytes there (FOLLOW), and starts it
 * over otherwise (RESET: a compaction, FLUSHDB or SWAPDB replaced the file,
 * or the replica has bytes the primary lacks). It then pushes LOG messages,
 * whole entries read with simdr_log_read, which the replica appends with
 * simdr_log_append: every link and CRC checked against its own tail before
 * anything is written. The replica answers REPLACK with its tails; WAIT
 * counts the replicas whose acknowledged tails cover every database.
 *
 * Messages from primary to replica (RESP arrays of bulk strings):
 *   RESET db identity layout run tail
 *                                start the database over, following identity
 *                                from 0 (tail: the primary's, to copy)
 *   FOLLOW db identity run       keep the database, follow identity
 *   REBASE db identity old-identity old-tail prefix-len prefix-hash layout run tail
 *                                the file identity was compacted from the file
 *                                old-identity the replica follows, listing its
 *                                live entries at old-tail: the replica rebuilds
 *                                the new file's [0, prefix-len) from its own
 *                                copy (simdr_log_compact_prefix), checks length
 *                                and XXH3-64, and follows identity from there
 *   LOG db from primary-tail bytes
 *   PING                         once a second (link liveness)
 *   PING turn                    a turn mark: what came before is a cut between
 *                                two commands, across databases (applied whole)
 * From replica to primary: REPLSYNC port {db identity tail meta-hex run}...,
 * REPLACK db identity tail.
 *
 * run is a random number a primary draws at startup. Matching metadata at
 * the replica's tail proves only that the last entry is the same: a primary
 * that lost the end of its file (a power cut before a sync) and was written
 * again, or a promoted replica that was behind another replica of the old
 * primary and was written since, can have the same last entry over other
 * bytes. So a replica resumes above the bytes the primary found in its file
 * at startup (or at promotion) only when it got them from this run, and on
 * a promoted replica's alias only up to the tail of the promotion.
 *
 * The replica treats its primary as hostile (a bug, an attacker, damage on
 * the wire): sizes and lines are bounded before anything is buffered, a LOG
 * needs a RESET or FOLLOW for its database on the same link first, and every
 * byte is checked by simdr_log_append before it is written. A refusal is
 * logged and drops the link; the replica keeps serving what it has.
 *
 * A compaction on the primary changes the file's identity. When the
 * replica holds the old file up to the tail the compaction listed its live
 * entries at, it follows with REBASE instead of RESET: it compacts its own
 * copy's prefix the same way, on a thread (the link is not read meanwhile,
 * the served copy answers reads), and the new file's bytes after that
 * prefix arrive as ordinary LOG messages. Any doubt (a different length or
 * hash, an error, a replica that lacks the bytes) makes the replica drop
 * the link and ask for the database with no identity, which gets RESET and
 * a full copy: its files stay a byte prefix of the primary's.
 *
 * A full copy of a database that holds data is built beside it, in
 * DIR/db-N.simdr.sync, and renamed over it once it reaches a tail the primary
 * announced: until then readers get the old copy (as Redis's replicas serve
 * their old data set during a full sync), never a database that empties
 * and fills again. A copy cut short (link lost, restart) is thrown away.
 *
 * The replica remembers the identity it follows per database in
 * DIR/replication.state; a promoted replica also remembers which primary
 * file its own file is a prefix of, so the other replicas of the old
 * primary resume from their tails instead of copying everything.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/select.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

#define FEED_CHUNK_MIN (1024 * 1024)      /* bytes read per simdr_log_read, at least */
#define FEED_CHUNK_MAX (32 * 1024 * 1024) /* ... and at most (a larger entry goes whole) */
#define FEED_OUT_HIGH (4 * 1024 * 1024)   /* stop feeding while this much is unsent */
#define MAX_FEEDS 64
#define UNKNOWN_IDENTITY UINT64_MAX     /* forces a RESET */
/* A replica trusts nothing its primary says about sizes: a frame header
 * line longer than this is refused, and so is a bulk string longer than the
 * largest LOG a primary can send (a chunk, or one entry holding a key and a
 * value of up to proto-max-bulk-len each). Without these a primary could
 * make the replica buffer without end. */
#define LINK_MAX_LINE 4096
#define REPLSYNC_WORDS_PER_DB 5 /* db identity tail meta-hex run */
#define LINK_BULK_SLACK (1024 * 1024) /* record header, padding, metadata */

/* ---- state kept on disk: what each database follows ---- */

typedef struct repl_state {
    uint64_t follows[SERVER_DBS];   /* identity of the primary file followed (0: none) */
    uint64_t alias_own[SERVER_DBS]; /* a promoted replica: its file's identity at promotion */
    uint64_t alias_of[SERVER_DBS];  /* ... and the primary file it was a prefix of */
    uint64_t alias_tail[SERVER_DBS]; /* ... up to this tail (beyond it, its own writes) */
    uint64_t alias_run[SERVER_DBS];  /* ... as sent by this run of that primary */
    uint64_t run[SERVER_DBS];       /* the primary run that last named the followed file */
    int layout[SERVER_DBS];         /* the followed file's layout (RESET names it) */
} repl_state;

/* ---- a primary's view of one replica ---- */

typedef struct feed {
    client *c;
    int port;
    uint64_t ident[SERVER_DBS]; /* identity being streamed */
    uint64_t sent[SERVER_DBS];  /* bytes of it sent */
    uint64_t acked_ident[SERVER_DBS];
    uint64_t acked[SERVER_DBS];
    long long last_ack_ms, last_ping_ms;
    int unmarked; /* sent something since the last turn mark */
} feed;

/* A replica's rebuild of a compacted file's prefix (REBASE), on a thread of
 * its own; one at a time, since the link is not read while it runs. */
typedef struct rebase_job {
    int active, db;
    pthread_t thread;
    atomic_int done;
    /* what the thread reads: the served copy of the old file */
    simdr_store *src;
    uint64_t src_ident, upto;
    char path[4300];
    /* what REBASE announced */
    uint64_t ident, run, prefix_len, prefix_hash, tail;
    int layout;
    /* what the thread wrote (done set after them) */
    int rc;
    uint64_t got_len, got_hash;
    simdr_store *built;
    char err[256];
    long long started_ms;
    /* the thread writes a byte here when it ends, which wakes the loop */
    int wake[2];
    struct event *wake_ev;
} rebase_job;

/* A client blocked in WAIT. */
typedef struct waiter {
    client *c;
    int want;
    long long deadline_ms; /* 0: none */
    uint64_t ident[SERVER_DBS], tail[SERVER_DBS];
    struct waiter *next;
} waiter;

static struct {
    /* replica side */
    char *host;
    int port;
    char *auth; /* NULL: use requirepass */
    int fd;
    struct event *ev;
    int connecting, handshake_sent, link_up;
    char *rbuf;
    size_t rlen, rcap;
    long long next_attempt_ms, last_io_ms, last_recv_ms;
    long long retry_ms;   /* pause before reconnecting (debug-repl-retry-ms) */
    long long timeout_ms; /* silence after which the link is dropped (repl-timeout) */
    /* per database, on this link: 1 once RESET or FOLLOW named the file */
    int announced[SERVER_DBS];
    /* per database: a full copy being built beside the served file */
    struct {
        int active, layout;
        int in_place; /* the last one failed (no room beside?): next copy in place */
        uint64_t ident, run;
        simdr_store *store;
    } stage[SERVER_DBS];
    uint64_t primary_tail[SERVER_DBS];
    /* per database: the tail an in-place full copy must reach (0: none) */
    uint64_t copy_to[SERVER_DBS];
    /* turn marks ("PING turn") seen on this link; the read buffer has been
     * searched for them up to mark_scan, and the last one ends at mark_end */
    int turn_marks;
    size_t mark_scan, mark_end;
    /* 1 + the offset of a REBASE started before the messages ahead of it
     * in its turn (rebase_first); skipped when processing reaches it */
    size_t early_rebase_at;
    /* without marks: where the search for the end of the held LOG's turn
     * stopped (log_waits_for_its_turn), so that it resumes there */
    size_t hold_scan;
    rebase_job rebase;
    /* per database: the last REBASE failed here; the next REPLSYNC names no
     * identity for it, which the primary answers with RESET */
    int force_full[SERVER_DBS];
    uint64_t full_copies, rebases, rebase_failures; /* INFO, replica side */
    uint64_t log_bytes;                             /* ... bytes received in LOGs */
    int no_rebase; /* debug-repl-no-rebase: REBASE is refused (full copies, to compare) */
    uint64_t resets_sent, rebases_sent;             /* INFO, primary side */
    repl_state st;
    int synced_dbs_dirty;
    /* primary side */
    feed *feeds[MAX_FEEDS];
    int nfeeds;
    waiter *waiters;
    uint8_t *chunk;
    size_t chunk_cap;
    int behind; /* a feed stopped before a tail: feed again next turn */
    uint64_t run_id; /* drawn at startup: tells this run from earlier ones */
    /* per database slot: a file and the tail below which this run found it
     * (at startup or promotion); searched by identity, as SWAPDB moves files */
    uint64_t found_ident[SERVER_DBS], found_tail[SERVER_DBS];
    char state_path[4200];
} R = {.fd = -1, .retry_ms = 1000, .timeout_ms = 60000};

int replica_is_replica(void) { return R.host != NULL; }

/* ---- small helpers ---- */

static int parse_u64(const char *s, size_t len, uint64_t *out) {
    if (!len || len > 20) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static void hex_encode(const uint8_t *p, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int hex_decode(const char *s, size_t len, uint8_t *out, size_t n) {
    if (len != 2 * n) return 0;
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = s[2 * i + (size_t)j];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
            if (d < 0) return 0;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return 1;
}

/* Appends one RESP array of bulk strings. */
static void add_array(struct evbuffer *b, int n, const char *const *args, const size_t *lens) {
    evbuffer_add_printf(b, "*%d\r\n", n);
    for (int i = 0; i < n; i++) {
        evbuffer_add_printf(b, "$%zu\r\n", lens[i]);
        evbuffer_add(b, args[i], lens[i]);
        evbuffer_add(b, "\r\n", 2);
    }
}

static void add_words(struct evbuffer *b, int n, ...) {
    const char *args[8];
    size_t lens[8];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n && i < 8; i++) {
        args[i] = va_arg(ap, const char *);
        lens[i] = strlen(args[i]);
    }
    va_end(ap);
    add_array(b, n, args, lens);
}

/* ---- the state file ---- */

static void state_load(void) {
    snprintf(R.state_path, sizeof R.state_path, "%s/replication.state", srv.cfg.dir);
    memset(&R.st, 0, sizeof R.st);
    FILE *f = fopen(R.state_path, "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        int db;
        unsigned long long a, b, t = 0, r = 0;
        if (sscanf(line, "follows %d %llu", &db, &a) == 2 && db >= 0 && db < SERVER_DBS)
            R.st.follows[db] = a;
        else if (sscanf(line, "run %d %llu", &db, &a) == 2 && db >= 0 && db < SERVER_DBS)
            R.st.run[db] = a;
        else if (sscanf(line, "alias %d %llu %llu %llu %llu", &db, &a, &b, &t, &r) >= 3 &&
                 db >= 0 && db < SERVER_DBS)
            /* a line without tail and run (older servers) allows no resume */
            R.st.alias_own[db] = a, R.st.alias_of[db] = b, R.st.alias_tail[db] = t,
            R.st.alias_run[db] = r;
        else if (sscanf(line, "layout %d %llu", &db, &a) == 2 && db >= 0 && db < SERVER_DBS &&
                 a == SIMDR_LAYOUT_UNALIGNED)
            R.st.layout[db] = (int)a;
    }
    fclose(f);
}

/* Written to a temporary file, synced and renamed: a crash leaves the old
 * or the new state, and the old one only ever causes a full copy. */
static void state_save(void) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", R.state_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        server_log(LOG_WARNING_, "cannot write %s: %s", tmp, strerror(errno));
        return;
    }
    for (int i = 0; i < SERVER_DBS; i++) {
        if (R.st.follows[i])
            fprintf(f, "follows %d %llu\n", i, (unsigned long long)R.st.follows[i]);
        if (R.st.run[i]) fprintf(f, "run %d %llu\n", i, (unsigned long long)R.st.run[i]);
        if (R.st.alias_own[i])
            fprintf(f, "alias %d %llu %llu %llu %llu\n", i, (unsigned long long)R.st.alias_own[i],
                    (unsigned long long)R.st.alias_of[i], (unsigned long long)R.st.alias_tail[i],
                    (unsigned long long)R.st.alias_run[i]);
        if (R.st.layout[i] != SIMDR_LAYOUT_ALIGNED64) fprintf(f, "layout %d %d\n", i, R.st.layout[i]);
    }
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, R.state_path) != 0) {
        server_log(LOG_WARNING_, "cannot write %s: %s", R.state_path, strerror(errno));
        unlink(tmp);
        return;
    }
    int dfd = open(srv.cfg.dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* ======================================================================== */
/* Primary side                                                             */
/* ======================================================================== */

static feed *feed_of(client *c) {
    for (int i = 0; i < R.nfeeds; i++)
        if (R.feeds[i]->c == c) return R.feeds[i];
    return NULL;
}

static void feed_drop(int i) {
    server_log(LOG_NOTICE_, "replica %s disconnected", R.feeds[i]->c->addr);
    free(R.feeds[i]);
    R.feeds[i] = R.feeds[--R.nfeeds];
}

static void waiter_remove(waiter *w) {
    for (waiter **p = &R.waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            free(w);
            return;
        }
}

void replica_client_freed(client *c) {
    for (int i = 0; i < R.nfeeds; i++)
        if (R.feeds[i]->c == c) {
            feed_drop(i);
            break;
        }
    for (waiter *w = R.waiters, *next; w; w = next) {
        next = w->next;
        if (w->c == c) waiter_remove(w);
    }
}

/* Output for a client outside its own command: the write event makes the
 * loop flush it at the end of the next turn. */
static void wake_client(client *c) { event_active(c->wev, EV_WRITE, 1); }

/* The identity and tail of a database now; 0/0 without a store. */
static int db_log_state(int db, simdr_log_state *out) {
    memset(out, 0, sizeof *out);
    if (!srv.db[db].store) return 0;
    return simdr_log_info(srv.db[db].store, out);
}

/* The tail below which this run found the file (0: this run made it). */
static uint64_t found_tail(uint64_t identity) {
    for (int db = 0; db < SERVER_DBS; db++)
        if (R.found_ident[db] == identity) return R.found_tail[db];
    return 0;
}

static void note_found(int db) {
    simdr_log_state st;
    R.found_ident[db] = R.found_tail[db] = 0;
    if (srv.db[db].store && db_log_state(db, &st) == SIMDR_OK)
        R.found_ident[db] = st.identity, R.found_tail[db] = st.tail;
}

static int resume_ok(int db, uint64_t ident, uint64_t tail, const uint8_t meta[20],
                     uint64_t run, const simdr_log_state *own) {
    if (!srv.db[db].store) return ident == 0 && tail == 0;
    /* On the alias, only what the promoted replica had received from that
     * run of the old primary is shared; above it are its own writes. */
    int same = ident == own->identity ||
               (R.st.alias_own[db] == own->identity && R.st.alias_of[db] == ident && ident &&
                tail <= R.st.alias_tail[db] && run == R.st.alias_run[db]);
    if (!same || tail > own->tail) return 0;
    /* Bytes this run wrote can only have come from this run. */
    if (tail > found_tail(own->identity) && run != R.run_id) return 0;
    if (tail == 0) return 1;
    uint8_t here[20];
    if (simdr_log_meta_at(srv.db[db].store, own->identity, tail, here) != SIMDR_OK) return 0;
    return memcmp(here, meta, 20) == 0;
}

/* The current file of db was compacted by this run from the file followed,
 * a replica that holds that file up to the tail the compaction listed its
 * live entries at can rebuild the new file's prefix (*o). An empty prefix
 * or old tail is left to RESET, which copies nothing. */
static int rebase_origin(int db, uint64_t followed, uint64_t held, const simdr_log_state *own,
                         simdr_log_origin_info *o) {
    if (!srv.db[db].store || !followed || followed == UNKNOWN_IDENTITY) return 0;
    if (simdr_log_origin(srv.db[db].store, o) != SIMDR_OK) return 0;
    return o->identity == own->identity && o->old_identity == followed && o->old_tail > 0 &&
           o->prefix_len > 0 && held >= o->old_tail;
}

static int rebase_possible(int db, uint64_t followed, uint64_t held, const simdr_log_state *own) {
    simdr_log_origin_info o;
    return rebase_origin(db, followed, held, own, &o);
}

/* REPLSYNC port {db identity tail meta-hex run}... */
/* c is this server's own link to its primary: REPLICAOF named this server. */
static int link_is_ours(const client *c) {
    struct sockaddr_storage mine, peer;
    socklen_t ml = sizeof mine, pl = sizeof peer;
    if (R.fd < 0 || c->fd < 0 || getsockname(R.fd, (struct sockaddr *)&mine, &ml) != 0 ||
        getpeername(c->fd, (struct sockaddr *)&peer, &pl) != 0)
        return 0;
    return ml == pl && memcmp(&mine, &peer, ml) == 0;
}

void cmd_replsync(client *c, int argc, char **argv, size_t *lens) {
    if (replica_is_replica()) {
        /* named apart: "a replica does not feed replicas" would send the
         * operator looking for another replica in between */
        if (link_is_ours(c))
            reply_error(c, "ERR this server cannot replicate itself (REPLICAOF names its own "
                           "address and port)");
        else
            reply_error(c, "ERR a replica does not feed replicas (REPLICAOF NO ONE first)");
        return;
    }
    uint64_t port;
    if ((argc - 2) % REPLSYNC_WORDS_PER_DB != 0 || !parse_u64(argv[1], lens[1], &port) || port > 65535) {
        reply_error(c, "ERR syntax error");
        return;
    }
    if (feed_of(c) || R.nfeeds == MAX_FEEDS) {
        reply_error(c, "ERR too many replicas");
        return;
    }
    feed *f = calloc(1, sizeof *f);
    if (!f) {
        reply_error(c, "ERR out of memory");
        return;
    }
    f->c = c;
    f->port = (int)port;
    f->last_ack_ms = now_ms();
    uint64_t ident[SERVER_DBS] = {0}, tail[SERVER_DBS] = {0}, run[SERVER_DBS] = {0};
    uint8_t meta[SERVER_DBS][20];
    memset(meta, 0, sizeof meta);
    for (int i = 2; i + REPLSYNC_WORDS_PER_DB - 1 < argc; i += REPLSYNC_WORDS_PER_DB) {
        uint64_t db;
        if (!parse_u64(argv[i], lens[i], &db) || db >= SERVER_DBS ||
            !parse_u64(argv[i + 1], lens[i + 1], &ident[db]) ||
            !parse_u64(argv[i + 2], lens[i + 2], &tail[db]) ||
            !(tail[db] == 0 || hex_decode(argv[i + 3], lens[i + 3], meta[db], 20)) ||
            !parse_u64(argv[i + 4], lens[i + 4], &run[db])) {
            free(f);
            reply_error(c, "ERR syntax error");
            return;
        }
    }
    reply_ok(c);
    for (int db = 0; db < SERVER_DBS; db++) {
        simdr_log_state own;
        if (db_log_state(db, &own) != SIMDR_OK) own.identity = UNKNOWN_IDENTITY;
        if (resume_ok(db, ident[db], tail[db], meta[db], run[db], &own)) {
            f->ident[db] = own.identity;
            f->sent[db] = tail[db];
            f->acked_ident[db] = own.identity;
            f->acked[db] = tail[db];
            char d[16], id[24], r[24];
            snprintf(d, sizeof d, "%d", db);
            snprintf(id, sizeof id, "%llu", (unsigned long long)own.identity);
            snprintf(r, sizeof r, "%llu", (unsigned long long)R.run_id);
            add_words(c->out, 4, "FOLLOW", d, id, r);
        } else if (rebase_possible(db, ident[db], tail[db], &own)) {
            /* A replica of the file this one was compacted from (it was
             * away during the compaction): the feed sends REBASE. */
            f->ident[db] = f->acked_ident[db] = ident[db];
            f->sent[db] = f->acked[db] = tail[db];
        } else {
            f->ident[db] = UNKNOWN_IDENTITY; /* the feed sends RESET */
            f->acked_ident[db] = UNKNOWN_IDENTITY;
        }
    }
    /* A turn mark at once: the replica holds what follows until the next
     * one, from the first LOG on (its first transaction whole too). */
    add_words(c->out, 2, "PING", "turn");
    R.feeds[R.nfeeds++] = f;
    server_log(LOG_NOTICE_, "replica %s (port %d) attached", c->addr, f->port);
}

static void check_waiters(long long now);

/* REPLACK db identity tail: no reply. */
void cmd_replack(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    feed *f = feed_of(c);
    uint64_t db, ident, tail;
    if (!f || !parse_u64(argv[1], lens[1], &db) || db >= SERVER_DBS ||
        !parse_u64(argv[2], lens[2], &ident) || !parse_u64(argv[3], lens[3], &tail))
        return;
    f->acked_ident[db] = ident;
    f->acked[db] = tail;
    f->last_ack_ms = now_ms();
    check_waiters(f->last_ack_ms);
}

/* Bytes to read for a replica lag bytes behind. Each simdr_log_read walks
 * the chain down from the tail to the chunk's end, so a catch-up in fixed
 * chunks would cost the square of the lag; chunks of a sixteenth of the lag
 * keep it about 8 walks of the lag. Never more than a quarter of the output
 * buffer limit, which would close the replica's connection. */
static size_t feed_chunk(uint64_t lag) {
    uint64_t want = lag / 16, most = FEED_CHUNK_MAX;
    if ((uint64_t)srv.cfg.output_buffer_limit / 4 < most)
        most = (uint64_t)srv.cfg.output_buffer_limit / 4;
    if (want > most) want = most;
    if (want < FEED_CHUNK_MIN) want = FEED_CHUNK_MIN;
    return (size_t)want;
}

static int chunk_room(size_t cap) {
    if (R.chunk_cap >= cap) return 1;
    uint8_t *bigger = realloc(R.chunk, cap);
    if (!bigger) return 0;
    R.chunk = bigger;
    R.chunk_cap = cap;
    return 1;
}

/* Sends what a replica lacks of one database, up to the output high mark.
 * 1 when the replica has been sent all of it. */
static int feed_db(feed *f, int db) {
    client *c = f->c;
    simdr_log_state st;
    if (db_log_state(db, &st) != SIMDR_OK) return 0;
    char d[16], num1[24], num2[24];
    snprintf(d, sizeof d, "%d", db);
    simdr_log_origin_info o;
    if (st.identity != f->ident[db] && rebase_origin(db, f->ident[db], f->sent[db], &st, &o)) {
        /* The replica has (or is sent, before this) the old file up to the
         * tail the compaction listed at: it rebuilds the prefix itself. */
        char words[9][24];
        const char *args[10] = {"REBASE"};
        size_t lens[10] = {6};
        uint64_t vals[9] = {(uint64_t)db,  st.identity,   o.old_identity,
                            o.old_tail,    o.prefix_len,  o.prefix_hash,
                            (uint64_t)o.layout, R.run_id, st.tail};
        for (int i = 0; i < 9; i++) {
            snprintf(words[i], sizeof words[i], "%llu", (unsigned long long)vals[i]);
            args[i + 1] = words[i];
            lens[i + 1] = strlen(words[i]);
        }
        add_array(c->out, 10, args, lens);
        f->ident[db] = st.identity;
        f->sent[db] = o.prefix_len;
        R.rebases_sent++;
        server_log(LOG_NOTICE_, "replica %s: db %d follows the compaction (prefix of %llu bytes "
                   "rebuilt there)", c->addr, db, (unsigned long long)o.prefix_len);
        f->unmarked = 1;
        wake_client(c);
    }
    if (st.identity != f->ident[db]) {
        f->ident[db] = st.identity;
        f->sent[db] = 0;
        R.resets_sent++;
        char layout[16];
        snprintf(num1, sizeof num1, "%llu", (unsigned long long)st.identity);
        snprintf(num2, sizeof num2, "%llu", (unsigned long long)R.run_id);
        snprintf(layout, sizeof layout, "%d", st.layout);
        char tail[24];
        snprintf(tail, sizeof tail, "%llu", (unsigned long long)st.tail);
        add_words(c->out, 6, "RESET", d, num1, layout, num2, tail);
        f->unmarked = 1;
        wake_client(c);
    }
    size_t high = FEED_OUT_HIGH;
    if ((uint64_t)srv.cfg.output_buffer_limit / 4 < high)
        high = (size_t)(srv.cfg.output_buffer_limit / 4);
    while (f->sent[db] < st.tail && evbuffer_get_length(c->out) < high) {
        size_t len = 0, cap = feed_chunk(st.tail - f->sent[db]);
        if (!chunk_room(cap)) return 0;
        int rc = simdr_log_read(srv.db[db].store, st.identity, f->sent[db], R.chunk, cap, &len);
        if (rc == SIMDR_ETOOBIG) { /* one entry larger than the chunk: it goes whole */
            if (!chunk_room(len)) return 0;
            rc = simdr_log_read(srv.db[db].store, st.identity, f->sent[db], R.chunk, len, &len);
        }
        if (rc != SIMDR_OK || len == 0) {
            R.behind = 1;
            if (rc != SIMDR_OK && rc != SIMDR_ENOENT)
                server_log(LOG_WARNING_, "replication read of db %d failed: %s", db,
                           simdr_last_error());
            return 0; /* ENOENT: replaced meanwhile; the next turn sends RESET */
        }
        snprintf(num1, sizeof num1, "%llu", (unsigned long long)f->sent[db]);
        snprintf(num2, sizeof num2, "%llu", (unsigned long long)st.tail);
        const char *args[5] = {"LOG", d, num1, num2, (const char *)R.chunk};
        size_t lens[5] = {3, strlen(d), strlen(num1), strlen(num2), len};
        add_array(c->out, 5, args, lens);
        f->sent[db] += len;
        f->unmarked = 1;
        wake_client(c);
    }
    if (f->sent[db] < st.tail) R.behind = 1;
    return f->sent[db] >= st.tail;
}

static void feed_all(long long now) {
    /* Replicas are fed during a compaction too (the engine holds the
     * store's writer lock only for its last moment); once the new file
     * replaces the old one it is sent from the start (RESET). */
    R.behind = 0;
    for (int i = 0; i < R.nfeeds; i++) {
        feed *f = R.feeds[i];
        if (f->c->flags & CLIENT_CLOSED) continue;
        int caught_up = 1;
        for (int db = 0; db < SERVER_DBS; db++) caught_up &= feed_db(f, db);
        if (caught_up && f->unmarked && !srv.exec_time_ms) {
            /* Everything sent is a cut between two commands of the primary
             * (a feed runs between commands, or inside one: WAIT and
             * BGREWRITEAOF feed too, but within an EXEC the transaction's
             * later commands are still to come, so no mark then): the
             * replica applies up to here in one go, every database at once. */
            add_words(f->c->out, 2, "PING", "turn");
            f->unmarked = 0;
            wake_client(f->c);
        }
        if (now - f->last_ping_ms >= 1000) {
            f->last_ping_ms = now;
            add_words(f->c->out, 1, "PING");
            wake_client(f->c);
        }
    }
    if (R.chunk_cap > FEED_CHUNK_MAX) { /* grown for one large entry: give it back */
        free(R.chunk);
        R.chunk = NULL;
        R.chunk_cap = 0;
    }
}

/* Replicas whose acknowledged tails cover the given ones. Every database
 * counts, an empty one too: after FLUSHALL, FLUSHDB or a SWAPDB with an
 * empty database its identity is 0 and its tail 0, and a replica covers
 * that only once it has acknowledged the RESET that empties its copy. */
static int replicas_covering(const uint64_t *ident, const uint64_t *tail) {
    int n = 0;
    for (int i = 0; i < R.nfeeds; i++) {
        feed *f = R.feeds[i];
        int ok = 1;
        for (int db = 0; db < SERVER_DBS && ok; db++)
            if (ident[db] != UNKNOWN_IDENTITY &&
                (f->acked_ident[db] != ident[db] || f->acked[db] < tail[db]))
                ok = 0;
        n += ok;
    }
    return n;
}

/* A database whose file was replaced since the WAIT (a compaction finished,
 * FLUSHDB, SWAPDB) holds its data under a new identity that the replicas
 * follow from then on, and the old identity is never acknowledged again:
 * the waiter then asks for the new file up to its tail of now, which holds
 * everything the old one did as of the WAIT. */
static void rebase_waiter(waiter *w) {
    for (int db = 0; db < SERVER_DBS; db++) {
        simdr_log_state st;
        if (db_log_state(db, &st) != SIMDR_OK || st.identity == w->ident[db]) continue;
        w->ident[db] = st.identity;
        w->tail[db] = st.tail;
    }
}

int replica_client_is_feed(client *c) { return feed_of(c) != NULL; }

static uint64_t link_max_bulk(void);

/* Output a replica's link may hold beyond client-output-buffer-limit: the
 * feed stops at a quarter of the limit, but the entry it sends then goes
 * whole, up to the largest LOG a primary can send. */
long long replica_output_allowance(client *c) {
    return feed_of(c) ? (long long)link_max_bulk() : 0;
}

int replica_exempt_from_timeout(client *c) {
    if (feed_of(c)) return 1;
    for (waiter *w = R.waiters; w; w = w->next)
        if (w->c == c) return 1;
    return 0;
}

int replica_blocked_clients(void) {
    int n = 0;
    for (waiter *w = R.waiters; w; w = w->next) n++;
    return n;
}

static void check_waiters(long long now) {
    for (waiter *w = R.waiters, *next; w; w = next) {
        next = w->next;
        rebase_waiter(w);
        int n = replicas_covering(w->ident, w->tail);
        if (n >= w->want || (w->deadline_ms && now >= w->deadline_ms)) {
            client *c = w->c;
            reply_int(c, n);
            c->flags &= ~(unsigned)CLIENT_BLOCKED;
            /* what it sent meanwhile runs now, as if it had just arrived */
            event_active(c->rev, EV_READ, 1);
            wake_client(c);
            waiter_remove(w);
        }
    }
}

/* A primary that turns replica has no replicas to wait for any more: its
 * clients blocked in WAIT get Redis's error for that instead of waiting for
 * good (WAIT 0 timeout). */
static void unblock_waiters(void) {
    while (R.waiters) {
        client *c = R.waiters->c;
        reply_error(c, "UNBLOCKED force unblock from blocking operation, instance state "
                       "changed (master -> replica?)");
        c->flags &= ~(unsigned)CLIENT_BLOCKED;
        event_active(c->rev, EV_READ, 1);
        wake_client(c);
        waiter_remove(R.waiters);
    }
}

void replica_wait(client *c, long long want, long long timeout_ms) {
    if (replica_is_replica()) {
        reply_error(c, "ERR WAIT cannot be used with replica instances. Please also note that "
                       "since Redis 4.0 if a replica is configured to be writable (which is not "
                       "the default) writes to replicas are just local and are not propagated.");
        return;
    }
    waiter *w = calloc(1, sizeof *w);
    if (!w) {
        reply_error(c, "ERR out of memory");
        return;
    }
    for (int db = 0; db < SERVER_DBS; db++) {
        simdr_log_state st;
        if (db_log_state(db, &st) == SIMDR_OK)
            w->ident[db] = st.identity, w->tail[db] = st.tail;
        else /* unreadable now: counts once a state can be read (rebase_waiter) */
            w->ident[db] = UNKNOWN_IDENTITY;
    }
    feed_all(now_ms()); /* what this client wrote goes out in this turn */
    int n = replicas_covering(w->ident, w->tail);
    /* Commands pipelined behind WAIT, or queued behind it in an EXEC, would
     * be answered before it: answer now (Redis: no blocking inside EXEC). */
    int more_input = c->qpos + c->parser.consumed < c->qlen;
    if (n >= want || more_input || (c->flags & (CLIENT_MULTI | CLIENT_IN_EXEC))) {
        free(w);
        reply_int(c, n);
        return;
    }
    w->c = c;
    w->want = (int)(want > MAX_FEEDS ? MAX_FEEDS + 1 : want);
    /* A timeout past the end of time (now + it overflows) waits for good, as
     * in Redis; the sum is never computed then (signed overflow). */
    long long now = now_ms();
    w->deadline_ms = timeout_ms && timeout_ms <= LLONG_MAX - now ? now + timeout_ms : 0;
    w->next = R.waiters;
    R.waiters = w;
    /* Blocked: what it sends is read (so a disconnect frees it, as in
     * Redis) but runs only after the reply. */
    c->flags |= CLIENT_BLOCKED;
}

/* ======================================================================== */
/* Replica side                                                             */
/* ======================================================================== */

static void stage_drop(int db);
static void rebase_abort(void);

static void link_close(const char *why) {
    rebase_abort();
    if (R.ev) {
        event_free(R.ev);
        R.ev = NULL;
    }
    if (R.fd >= 0) close(R.fd);
    if (R.link_up || R.connecting || R.handshake_sent)
        server_log(LOG_NOTICE_, "replication link to %s:%d closed: %s", R.host ? R.host : "-",
                   R.port, why);
    R.fd = -1;
    R.connecting = R.handshake_sent = R.link_up = 0;
    R.rlen = 0;
    R.turn_marks = 0;
    R.mark_scan = R.mark_end = 0;
    R.early_rebase_at = R.hold_scan = 0;
    memset(R.announced, 0, sizeof R.announced);
    memset(R.copy_to, 0, sizeof R.copy_to);
    for (int db = 0; db < SERVER_DBS; db++)
        if (R.stage[db].active) stage_drop(db);
    R.next_attempt_ms = now_ms() + R.retry_ms;
}

static int send_all(const void *p, size_t n) {
    const char *s = p;
    while (n) {
        ssize_t w = send(R.fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* The link's requests are small; wait for room rather than queue. */
            fd_set ws;
            FD_ZERO(&ws);
            FD_SET(R.fd, &ws);
            struct timeval tv = {1, 0};
            if (select(R.fd + 1, NULL, &ws, NULL, &tv) <= 0) return -1;
            continue;
        }
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

#define LINK_MAX_WORDS (2 + REPLSYNC_WORDS_PER_DB * SERVER_DBS) /* REPLSYNC, port, dbs */

static int send_words(int n, const char *const *args) {
    if (n > LINK_MAX_WORDS) return -1;
    struct evbuffer *b = evbuffer_new();
    if (!b) return -1;
    size_t lens[LINK_MAX_WORDS];
    for (int i = 0; i < n; i++) lens[i] = strlen(args[i]);
    add_array(b, n, args, lens);
    size_t len = evbuffer_get_length(b);
    unsigned char *p = evbuffer_pullup(b, -1);
    int rc = p ? send_all(p, len) : -1;
    evbuffer_free(b);
    return rc;
}

static void send_ack(int db) {
    simdr_log_state st;
    if (db_log_state(db, &st) != SIMDR_OK) return;
    char d[16], id[24], t[24];
    snprintf(d, sizeof d, "%d", db);
    snprintf(id, sizeof id, "%llu", (unsigned long long)R.st.follows[db]);
    snprintf(t, sizeof t, "%llu", (unsigned long long)st.tail);
    const char *args[4] = {"REPLACK", d, id, t};
    if (send_words(4, args) != 0) link_close("write failed");
}

static void send_handshake(void) {
    const char *pass = R.auth ? R.auth : srv.cfg.requirepass;
    if (pass) {
        const char *args[2] = {"AUTH", pass};
        if (send_words(2, args) != 0) return link_close("write failed");
    }
    /* REPLSYNC port {db identity tail meta run}... */
    static char words[LINK_MAX_WORDS][48];
    const char *args[LINK_MAX_WORDS];
    int n = 0;
    snprintf(words[n], 48, "REPLSYNC");
    args[n] = words[n], n++;
    snprintf(words[n], 48, "%d", srv.cfg.port);
    args[n] = words[n], n++;
    for (int db = 0; db < SERVER_DBS; db++) {
        simdr_log_state st;
        if (db_log_state(db, &st) != SIMDR_OK) continue;
        snprintf(words[n], 48, "%d", db);
        args[n] = words[n], n++;
        /* no identity after a failed REBASE: the primary answers RESET */
        snprintf(words[n], 48, "%llu",
                 (unsigned long long)(R.force_full[db] ? 0 : R.st.follows[db]));
        args[n] = words[n], n++;
        snprintf(words[n], 48, "%llu", (unsigned long long)st.tail);
        args[n] = words[n], n++;
        if (st.tail)
            hex_encode(st.tail_meta, 20, words[n]);
        else
            snprintf(words[n], 48, "-");
        args[n] = words[n], n++;
        snprintf(words[n], 48, "%llu", (unsigned long long)R.st.run[db]);
        args[n] = words[n], n++;
    }
    if (send_words(n, args) != 0) return link_close("write failed");
    R.handshake_sent = 1;
}

/* One message parsed from the link: an array of bulk strings, or a status
 * (+...) / error (-...) line as a one-element array with is_error set. */
#define LINK_MAX_ARGS 10 /* REBASE and its nine numbers */
typedef struct link_msg {
    int argc;
    const char *argv[LINK_MAX_ARGS];
    size_t lens[LINK_MAX_ARGS];
    int is_error, is_status;
    size_t consumed;
    const char *bad; /* why parse_msg refused it */
} link_msg;

static int malformed(link_msg *m, const char *why) {
    m->bad = why;
    return -1;
}

/* The longest bulk string a primary can send (see LINK_MAX_LINE). */
static uint64_t link_max_bulk(void) {
    return (uint64_t)FEED_CHUNK_MAX + 2 * (uint64_t)srv.cfg.proto_max_bulk_len + LINK_BULK_SLACK;
}

/* A header line in p[0..n): its length with the newline, 0 while incomplete,
 * -1 when it is already longer than any frame's header line. */
static long link_line(const char *p, size_t n) {
    const char *nl = memchr(p, '\n', n < LINK_MAX_LINE ? n : LINK_MAX_LINE);
    if (nl) return (long)(nl - p) + 1;
    return n < LINK_MAX_LINE ? 0 : -1;
}

/* 1 parsed, 0 incomplete, -1 malformed (m->bad says why). */
static int parse_msg(const char *p, size_t n, link_msg *m) {
    memset(m, 0, sizeof *m);
    long first = link_line(p, n);
    if (first < 0) return malformed(m, "a header line without end");
    if (!first) return 0;
    const char *nl = p + first - 1;
    size_t line = (size_t)(nl - p) + 1;
    if (line < 3 || p[line - 2] != '\r') return malformed(m, "a line not ended by CRLF");
    if (p[0] == '+' || p[0] == '-') {
        m->is_status = p[0] == '+';
        m->is_error = p[0] == '-';
        m->argc = 1;
        m->argv[0] = p + 1;
        m->lens[0] = line - 3;
        m->consumed = line;
        return 1;
    }
    if (p[0] != '*') return malformed(m, "a reply that is not an array, status or error");
    uint64_t count;
    if (!parse_u64(p + 1, line - 3, &count) || count == 0 || count > LINK_MAX_ARGS)
        return malformed(m, "an array of no or too many elements");
    size_t pos = line;
    for (uint64_t i = 0; i < count; i++) {
        if (pos >= n) return 0;
        const char *q = p + pos;
        long qline = link_line(q, n - pos);
        if (qline < 0) return malformed(m, "a header line without end");
        if (!qline) return 0;
        size_t ql = (size_t)qline;
        uint64_t blen;
        if (q[0] != '$' || ql < 4 || q[ql - 2] != '\r' || !parse_u64(q + 1, ql - 3, &blen))
            return malformed(m, "an array element that is not a bulk string");
        if (blen > link_max_bulk()) return malformed(m, "a bulk string longer than any message");
        if (n - pos - ql < blen + 2) return 0;
        if (q[ql + blen] != '\r' || q[ql + blen + 1] != '\n')
            return malformed(m, "a bulk string not ended by CRLF");
        m->argv[i] = q + ql;
        m->lens[i] = (size_t)blen;
        pos += ql + (size_t)blen + 2;
    }
    m->argc = (int)count;
    m->consumed = pos;
    return 1;
}

static int arg_u64(const link_msg *m, int i, uint64_t *out) {
    return i < m->argc && parse_u64(m->argv[i], m->lens[i], out);
}

/* Logs why a message from the primary is refused; -1 (drop the link). */
static int link_refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int link_refuse(const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    server_log(LOG_WARNING_, "replication from %s:%d refused: %s", R.host ? R.host : "-",
               R.port, why);
    return -1;
}

/* ---- full copies built beside the served file ---- */

static void stage_path(int db, const char *suffix, char *out, size_t cap) {
    snprintf(out, cap, "%s.sync%s", srv.db[db].path, suffix);
}

/* The side file and hint of a store are "<store>.simdr" and "<store>.hint". */
static const char *const store_companions[] = {"", ".simdr", ".hint"};

static void stage_drop(int db) {
    if (R.stage[db].store && simdr_close(R.stage[db].store) != SIMDR_OK)
        server_log(LOG_WARNING_, "db %d: closing the partial copy: %s", db, simdr_last_error());
    R.stage[db].store = NULL;
    R.stage[db].active = 0;
    for (size_t i = 0; i < sizeof store_companions / sizeof *store_companions; i++) {
        char p[4300];
        stage_path(db, store_companions[i], p, sizeof p);
        unlink(p);
    }
}

static int stage_open(int db) {
    if (R.stage[db].store) return 0;
    char p[4300];
    stage_path(db, "", p, sizeof p);
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_CREATE;
    o.durability = SIMDR_SYNC_NONE; /* nothing counts on it before it is swapped in */
    o.file_mode = 0600;
    o.layout = R.stage[db].layout;
    return simdr_open(&R.stage[db].store, p, &o);
}

static void sync_dir(void) {
    int fd = open(srv.cfg.dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* The copy reached the primary's tail: it becomes the database. The store
 * file is renamed while still open, so the hint its close writes carries the
 * renamed file's times and is still good for the reopen; side file and hint
 * follow it (both name the file by device and inode, which a rename keeps).
 * 0, or -1 with the old copy still served. */
static int stage_swap(int db) {
    server_db *d = &srv.db[db];
    char from[4300], to[4300];
    stage_path(db, "", from, sizeof from);
    /* on disk before its name replaces a copy that was: a power cut leaves
     * the old copy or the whole new one */
    if (simdr_sync(R.stage[db].store) != SIMDR_OK) {
        server_log(LOG_WARNING_, "db %d: cannot sync the copy: %s", db, simdr_last_error());
        stage_drop(db);
        return -1;
    }
    watch_touch_db(db, -1);
    db_close(d);
    if (rename(from, d->path) != 0) {
        server_log(LOG_WARNING_, "db %d: cannot rename %s: %s", db, from, strerror(errno));
        stage_drop(db);
        db_open_existing(d);
        return -1;
    }
    if (simdr_close(R.stage[db].store) != SIMDR_OK)
        server_log(LOG_WARNING_, "db %d: closing the copy: %s", db, simdr_last_error());
    R.stage[db].store = NULL;
    for (size_t i = 1; i < sizeof store_companions / sizeof *store_companions; i++) {
        stage_path(db, store_companions[i], from, sizeof from);
        snprintf(to, sizeof to, "%s%s", d->path, store_companions[i]);
        if (rename(from, to) != 0) unlink(to); /* stale beside the new file: a slower open */
    }
    sync_dir();
    R.st.follows[db] = R.stage[db].ident;
    R.st.run[db] = R.stage[db].run;
    R.st.layout[db] = R.stage[db].layout;
    R.st.alias_own[db] = R.st.alias_of[db] = 0;
    R.stage[db].active = 0;
    state_save();
    if (db_open_existing(d) != 0) {
        server_log(LOG_WARNING_, "db %d: cannot open the new copy: %s", db, simdr_last_error());
        return -1;
    }
    ks_mark_dirty(d);
    server_log(LOG_NOTICE_, "db %d: copy complete, serving file %llu", db,
               (unsigned long long)R.st.follows[db]);
    return 0;
}

/* The key of the record a slot hash holds now, for the watchers (a
 * tombstone or a hole names only the hash of what it deletes). */
static void touch_key_at(int db, simdr_store *s, uint64_t hash) {
    simdr_entry *e;
    if (simdr_get_hashed(s, hash, &e) != SIMDR_OK) return;
    record_view rv;
    if (record_parse(simdr_entry_data(e), simdr_entry_size(e), &rv) &&
        !(rv.flags & RECORD_FLAG_HOLE))
        watch_touch_key(db, rv.key, rv.key_len);
    simdr_entry_release(e);
}

/* A replica's clients WATCH keys the primary writes: before a LOG's entries
 * [from, from + len) are appended, every key they write or delete fails its
 * watchers' EXEC, as the primary's own writes do there (watch_touch_key).
 * The entries are walked back from the end by their links; bytes that do
 * not chain stop the walk (simdr_log_append then refuses them all). */
static void touch_logged_keys(int db, simdr_store *s, uint64_t from, const uint8_t *bytes,
                              size_t len) {
    enum { META = 20 }; /* an entry's metadata: key hash, link, CRC (docs/FORMAT.md) */
    int aligned = simdr_layout_of(s) == SIMDR_LAYOUT_ALIGNED64;
    uint64_t end = from + len;
    while (end - from > META) {
        uint64_t meta_off = end - META;
        const uint8_t *meta = bytes + (meta_off - from);
        uint64_t hash = load_u64le(meta), prev = load_u64le(meta + 8);
        if (prev < from || prev >= meta_off) return;
        if (meta_off - prev == 1 && bytes[prev - from] == 0) {
            touch_key_at(db, s, hash); /* a delete */
        } else {
            uint64_t start = aligned ? prev + ((64 - prev % 64) & 63) : prev;
            if (start >= meta_off) return;
            record_view rv;
            if (record_parse(bytes + (start - from), (size_t)(meta_off - start), &rv)) {
                if (rv.flags & RECORD_FLAG_HOLE)
                    touch_key_at(db, s, hash);
                else
                    watch_touch_key(db, rv.key, rv.key_len);
            }
        }
        end = prev;
    }
}

/* The store a LOG appends to: the existing file, or a new one in the layout
 * the last RESET named (the primary's, kept in the state file so a restart
 * or a reconnect answered by FOLLOW still knows it), so its bytes land the
 * same. */
static int replica_store(server_db *d, int layout, simdr_store **out) {
    if (d->store || layout == SIMDR_LAYOUT_ALIGNED64) return db_store_for_write(d, out);
    simdr_options o;
    simdr_options_init(&o);
    o.open_mode = SIMDR_OPEN_CREATE;
    o.append_mode = db_append_mode();
    o.durability = SIMDR_SYNC_NONE; /* as keyspace.c: the server syncs */
    o.file_mode = 0600;
    o.layout = layout;
    int rc = simdr_open(&d->store, d->path, &o);
    if (rc != SIMDR_OK) return rc;
    *out = d->store;
    return 0;
}

/* ---- following a compaction from the copy held (REBASE) ---- */

static void *rebase_main(void *arg) {
    rebase_job *j = arg;
    j->rc = simdr_log_compact_prefix(j->src, j->src_ident, j->upto, j->path, &j->got_len,
                                     &j->got_hash);
    if (j->rc != SIMDR_OK) {
        snprintf(j->err, sizeof j->err, "%s", simdr_last_error());
    } else if (j->got_len == j->prefix_len && j->got_hash == j->prefix_hash) {
        simdr_options o;
        simdr_options_init(&o);
        o.open_mode = SIMDR_OPEN_EXISTING;
        o.durability = SIMDR_SYNC_NONE; /* as a full copy's: synced before it is swapped in */
        o.file_mode = 0600;
        o.layout = j->layout;
        j->rc = simdr_open(&j->built, j->path, &o);
        if (j->rc != SIMDR_OK) snprintf(j->err, sizeof j->err, "%s", simdr_last_error());
    }
    atomic_store_explicit(&j->done, 1, memory_order_release);
    ssize_t w;
    do
        w = write(j->wake[1], "", 1);
    while (w < 0 && errno == EINTR);
    return NULL;
}

static void rebase_wake_close(rebase_job *j) {
    if (j->wake_ev) event_free(j->wake_ev);
    j->wake_ev = NULL;
    if (j->wake[0] >= 0) close(j->wake[0]);
    if (j->wake[1] >= 0) close(j->wake[1]);
    j->wake[0] = j->wake[1] = -1;
}

static void rebase_finish(void);

static void on_rebase_done(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (R.rebase.active && atomic_load_explicit(&R.rebase.done, memory_order_acquire))
        rebase_finish();
}

/* The link is closed or the server stops while a prefix is rebuilt: waits
 * for the thread (the call cannot be interrupted) and throws its work away. */
static void rebase_abort(void) {
    rebase_job *j = &R.rebase;
    if (!j->active) return;
    pthread_join(j->thread, NULL);
    j->active = 0;
    rebase_wake_close(j);
    if (j->built && simdr_close(j->built) != SIMDR_OK)
        server_log(LOG_WARNING_, "db %d: closing the rebuilt copy: %s", j->db, simdr_last_error());
    j->built = NULL;
    stage_drop(j->db);
}

/* REBASE could not be followed: the link is dropped and the database asked
 * for without identity at the next REPLSYNC, which the primary answers with
 * RESET (a full copy). -1 (drop the link). */
static int rebase_refused(int db, const char *why) {
    server_log(LOG_WARNING_, "db %d: cannot follow the primary's compaction from the copy held "
               "(%s): copying the database again", db, why);
    R.force_full[db] = 1;
    R.rebase_failures++;
    return -1;
}

/* REBASE db identity old-identity old-tail prefix-len prefix-hash layout run
 * tail. 1: the rebuild runs on its thread and the link is not read until it
 * ends (rebase_finish); -1: drop the link. */
static int rebase_start(const link_msg *m, int db) {
    uint64_t v[9];
    for (int i = 0; i < 9; i++)
        if (!arg_u64(m, i + 1, &v[i]))
            return link_refuse("db %d: REBASE with a malformed number", db);
    uint64_t ident = v[1], old = v[2], upto = v[3], len = v[4], hash = v[5], layout = v[6];
    if (layout != SIMDR_LAYOUT_ALIGNED64 && layout != SIMDR_LAYOUT_UNALIGNED)
        return link_refuse("db %d: REBASE with an unknown layout", db);
    if (len > v[8]) return link_refuse("db %d: REBASE of a prefix beyond the tail", db);
    /* LOGs of the new file wait for its prefix */
    R.announced[db] = 0;
    server_db *d = &srv.db[db];
    simdr_log_state own;
    if (R.no_rebase) return rebase_refused(db, "debug-repl-no-rebase is set");
    if (R.stage[db].active || R.stage[db].in_place)
        return rebase_refused(db, "a full copy was in progress");
    if (!d->store || R.st.follows[db] != old)
        return rebase_refused(db, "it does not hold the file the primary compacted");
    if (db_log_state(db, &own) != SIMDR_OK || own.tail < upto)
        return rebase_refused(db, "it holds less of that file than the compaction listed");
    if (own.layout != (int)layout) return rebase_refused(db, "another layout");
    stage_drop(db); /* leftovers */
    rebase_job *j = &R.rebase;
    memset(j, 0, sizeof *j);
    j->db = db;
    j->src = d->store;
    j->src_ident = own.identity;
    j->upto = upto;
    stage_path(db, "", j->path, sizeof j->path);
    j->ident = ident;
    j->run = v[7];
    j->prefix_len = len;
    j->prefix_hash = hash;
    j->tail = v[8];
    j->layout = (int)layout;
    j->started_ms = now_ms();
    atomic_store(&j->done, 0);
    j->wake[0] = j->wake[1] = -1;
    if (pipe2(j->wake, O_CLOEXEC | O_NONBLOCK) != 0 ||
        !(j->wake_ev = event_new(srv.base, j->wake[0], EV_READ, on_rebase_done, NULL)) ||
        event_add(j->wake_ev, NULL) != 0) {
        rebase_wake_close(j);
        return rebase_refused(db, "no pipe");
    }
    if (pthread_create(&j->thread, NULL, rebase_main, j) != 0) {
        rebase_wake_close(j);
        return rebase_refused(db, "no thread");
    }
    j->active = 1;
    server_log(LOG_NOTICE_, "db %d: following the primary's compaction (file %llu) from the "
               "copy held: rebuilding its first %llu bytes", db, (unsigned long long)ident,
               (unsigned long long)len);
    return 1;
}

static void link_process(void);

/* The rebuild ended (its thread's byte on the pipe, or the cron's look): a
 * prefix of the right length and hash becomes a full copy that has reached
 * it, and the link is read again (the LOGs behind REBASE continue the
 * copy); anything else copies the database again. */
static void rebase_finish(void) {
    rebase_job *j = &R.rebase;
    pthread_join(j->thread, NULL);
    j->active = 0;
    rebase_wake_close(j);
    int db = j->db;
    char why[512] = "";
    simdr_log_state bs;
    if (j->rc != SIMDR_OK)
        snprintf(why, sizeof why, "%s", j->err);
    else if (j->got_len != j->prefix_len || j->got_hash != j->prefix_hash)
        snprintf(why, sizeof why, "the rebuilt prefix is not the primary's: %llu bytes of hash "
                 "%016llx, the primary's %llu bytes of hash %016llx",
                 (unsigned long long)j->got_len, (unsigned long long)j->got_hash,
                 (unsigned long long)j->prefix_len, (unsigned long long)j->prefix_hash);
    else if (simdr_log_info(j->built, &bs) != SIMDR_OK || bs.tail != j->prefix_len ||
             bs.layout != j->layout)
        snprintf(why, sizeof why, "the rebuilt prefix does not open as the primary's");
    if (*why) {
        if (j->built) simdr_close(j->built);
        j->built = NULL;
        stage_drop(db);
        rebase_refused(db, why);
        link_close("compaction not followed");
        return;
    }
    R.stage[db].active = 1;
    R.stage[db].ident = j->ident;
    R.stage[db].run = j->run;
    R.stage[db].layout = j->layout;
    R.stage[db].store = j->built;
    j->built = NULL;
    R.primary_tail[db] = j->tail;
    R.announced[db] = 1;
    R.rebases++;
    server_log(LOG_NOTICE_, "db %d: rebuilt the compacted file's first %llu bytes from the copy "
               "held in %lld ms", db, (unsigned long long)j->prefix_len,
               now_ms() - j->started_ms);
    if (j->tail <= j->prefix_len) {
        if (stage_swap(db) != 0) return link_close("cannot switch to the rebuilt copy");
        send_ack(db);
    }
    if (R.fd < 0) return;
    R.last_recv_ms = R.last_io_ms = now_ms();
    if (!R.ev || event_add(R.ev, NULL) != 0) return link_close("event");
    if (R.rlen) link_process();
}

/* 0 to go on, -1 to drop the link, 1 to stop reading it (a REBASE runs).
 * acked: databases to acknowledge. */
static int handle_msg(const link_msg *m, int *acked) {
    if (m->is_error && m->lens[0] >= 30 &&
        memmem(m->argv[0], m->lens[0], "without any password configured", 31)) {
        server_log(LOG_WARNING_, "primary %s:%d has no password; going on without AUTH",
                   R.host, R.port);
        return 0;
    }
    if (m->is_error) {
        server_log(LOG_WARNING_, "primary %s:%d refused: %.*s", R.host, R.port,
                   (int)(m->lens[0] < 200 ? m->lens[0] : 200), m->argv[0]);
        return -1;
    }
    if (m->is_status) return 0; /* +OK of AUTH and REPLSYNC */
    R.link_up = 1;
    uint64_t db, a, b, layout = SIMDR_LAYOUT_ALIGNED64, run = 0, target = 0;
    if (eq_nocase(m->argv[0], m->lens[0], "ping")) return 0;
    if (!arg_u64(m, 1, &db) || db >= SERVER_DBS)
        return link_refuse("a message for no database: %.*s", (int)(m->lens[0] < 16 ? m->lens[0] : 16),
                           m->argv[0]);
    server_db *d = &srv.db[db];
    if (eq_nocase(m->argv[0], m->lens[0], "rebase") && m->argc == 10) return rebase_start(m, (int)db);
    if (eq_nocase(m->argv[0], m->lens[0], "reset") && m->argc >= 3 && m->argc <= 6 &&
        arg_u64(m, 2, &a)) {
        if (m->argc >= 4 && (!arg_u64(m, 3, &layout) || (layout != SIMDR_LAYOUT_ALIGNED64 &&
                                                         layout != SIMDR_LAYOUT_UNALIGNED)))
            return link_refuse("db %d: RESET with an unknown layout", (int)db);
        if ((m->argc >= 5 && !arg_u64(m, 4, &run)) || (m->argc == 6 && !arg_u64(m, 5, &target)))
            return link_refuse("db %d: RESET with a malformed run or tail", (int)db);
        if (d->store || R.st.follows[db])
            server_log(LOG_NOTICE_, "db %d: full copy from the primary (file %llu)", (int)db,
                       (unsigned long long)a);
        stage_drop(db);
        R.announced[db] = 1;
        R.force_full[db] = 0;
        R.copy_to[db] = 0; /* an earlier copy in place is superseded */
        R.full_copies++;
        int in_place = R.stage[db].in_place;
        R.stage[db].in_place = 0;
        if (d->store && target && !in_place) { /* built beside, served data kept meanwhile */
            R.stage[db].active = 1;
            R.stage[db].ident = a;
            R.stage[db].run = run;
            R.stage[db].layout = (int)layout;
            R.primary_tail[db] = target;
            return 0;
        }
        if (db_flush(d) != 0) return -1;
        R.st.follows[db] = a;
        R.st.run[db] = run;
        R.st.alias_own[db] = R.st.alias_of[db] = 0;
        R.st.layout[db] = (int)layout;
        state_save();
        R.primary_tail[db] = 0;
        R.copy_to[db] = target; /* readers see it fill: the link is not "up" before */
        R.announced[db] = 1;
        acked[db] = 1;
        return 0;
    }
    if (eq_nocase(m->argv[0], m->lens[0], "follow") && (m->argc == 3 || m->argc == 4) &&
        arg_u64(m, 2, &a) && (m->argc == 3 || arg_u64(m, 3, &run))) {
        /* FOLLOW answers REPLSYNC; a file of another identity later on this
         * link would splice two files into one: only RESET starts over. */
        if (R.announced[db] && R.st.follows[db] != a)
            return link_refuse("db %d: FOLLOW of file %llu while following %llu on this link "
                               "(an identity change needs RESET)",
                               (int)db, (unsigned long long)a,
                               (unsigned long long)R.st.follows[db]);
        R.announced[db] = 1;
        if (R.stage[db].active) stage_drop(db);
        if (R.st.follows[db] != a || R.st.alias_own[db] || R.st.run[db] != run) {
            R.st.follows[db] = a;
            R.st.run[db] = run;
            R.st.alias_own[db] = R.st.alias_of[db] = 0;
            state_save();
        }
        acked[db] = 1;
        return 0;
    }
    if (eq_nocase(m->argv[0], m->lens[0], "log") && m->argc == 5 && arg_u64(m, 2, &a) &&
        arg_u64(m, 3, &b)) {
        if (!R.announced[db])
            return link_refuse("db %d: LOG before RESET or FOLLOW named the file", (int)db);
        if (b < a || b - a < m->lens[4])
            return link_refuse("db %d: LOG of %zu bytes from %llu beyond the primary's tail %llu",
                               (int)db, m->lens[4], (unsigned long long)a, (unsigned long long)b);
        R.log_bytes += m->lens[4];
        if (R.stage[db].active) {
            uint64_t tail = 0;
            int rc = stage_open((int)db);
            if (rc == SIMDR_OK)
                rc = simdr_log_append(R.stage[db].store, a, m->argv[4], m->lens[4], &tail);
            if (rc == SIMDR_ECORRUPT) { /* the primary's bytes */
                server_log(LOG_WARNING_, "db %d: replicated bytes refused: %s", (int)db,
                           simdr_last_error());
                return -1;
            }
            if (rc != SIMDR_OK) { /* ours: a full disk most likely */
                server_log(LOG_WARNING_, "db %d: cannot build the copy beside the served one "
                           "(%s): the next copy replaces it in place", (int)db,
                           simdr_last_error());
                R.stage[db].in_place = 1;
                return -1;
            }
            R.primary_tail[db] = b;
            if (tail < b) return 0; /* acknowledged as the old file until swapped in */
            if (stage_swap((int)db) != 0) return -1;
            acked[db] = 1;
            return 0;
        }
        simdr_store *s;
        if (replica_store(d, R.st.layout[db], &s) != 0)
            return link_refuse("db %d: cannot open %s: %s", (int)db, d->path, simdr_last_error());
        uint64_t tail = 0;
        if (srv.watched_keys)
            touch_logged_keys((int)db, s, a, (const uint8_t *)m->argv[4], m->lens[4]);
        int rc = simdr_log_append(s, a, m->argv[4], m->lens[4], &tail);
        if (rc != SIMDR_OK) {
            server_log(LOG_WARNING_, "db %d: replicated bytes refused: %s", (int)db,
                       simdr_last_error());
            /* A failed store is reopened (ks_reopen_failed), after which
             * the link starts again from its tail. */
            if (rc == SIMDR_EFAILED) d->failed = 1;
            return -1;
        }
        ks_mark_dirty(d);
        R.primary_tail[db] = b;
        if (tail >= R.copy_to[db]) R.copy_to[db] = 0;
        acked[db] = 1;
        return 0;
    }
    return link_refuse("unexpected message from the primary: %.*s (%d words)",
                       (int)(m->lens[0] < 16 ? m->lens[0] : 16), m->argv[0], m->argc);
}

static void on_link(evutil_socket_t fd, short what, void *arg) {
    (void)arg;
    if (R.connecting) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) return link_close(strerror(err));
        R.connecting = 0;
        event_free(R.ev);
        R.ev = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_link, NULL);
        if (!R.ev || event_add(R.ev, NULL) != 0) return link_close("event");
        server_log(LOG_NOTICE_, "connected to primary %s:%d", R.host, R.port);
        send_handshake();
        return;
    }
    if (!(what & EV_READ) || R.rebase.active) return;
    for (int round = 0; round < 16; round++) {
        if (R.rcap - R.rlen < 65536) {
            size_t ncap = R.rcap ? R.rcap * 2 : 1 << 20;
            char *n = realloc(R.rbuf, ncap);
            if (!n) return link_close("out of memory");
            R.rbuf = n;
            R.rcap = ncap;
        }
        ssize_t got = recv(fd, R.rbuf + R.rlen, R.rcap - R.rlen, 0);
        if (got == 0) return link_close("closed by the primary");
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            return link_close(strerror(errno));
        }
        R.rlen += (size_t)got;
        R.last_io_ms = R.last_recv_ms = now_ms();
        if ((size_t)got < 65536) break;
    }
    link_process();
}

/* The primary feeds a database from its tail after a turn's writes, in LOG
 * chunks cut by size; each LOG names the primary's tail at that feed (the end
 * of a turn). A replica that applied each chunk as it arrived could show its
 * readers a turn half applied (an MSET, a MULTI/EXEC with some of its writes).
 *
 * When a feed has sent every database up to its tail, the primary adds a turn
 * mark, "PING turn": what came before it is a cut between two of the
 * primary's commands, across all databases. A replica that has seen a mark on
 * the link applies the messages up to the last mark received in one go,
 * between two client commands, and holds the rest; so a transaction over two
 * databases, or the two copies a SWAPDB sends, are seen whole. (A replica of
 * an earlier version ignores the mark as a PING.) Before the first mark (a
 * primary of an earlier version) a LOG that ends before the tail it names is
 * held until a later LOG of that database reaching its named tail has
 * arrived: one database's turns whole. More than LOG_HOLD_MAX held (a huge
 * turn, or a replica that far behind) is applied as it comes, and so is a
 * full copy built beside the served file, which no reader sees before it is
 * whole. */
#define LOG_HOLD_MAX (64 * 1024 * 1024)

static int is_ping(const link_msg *m) {
    return m->argc >= 1 && !m->is_error && !m->is_status && eq_nocase(m->argv[0], m->lens[0], "ping");
}

static int is_turn_mark(const link_msg *m) {
    return m->argc == 2 && !m->is_error && !m->is_status &&
           eq_nocase(m->argv[0], m->lens[0], "ping") && eq_nocase(m->argv[1], m->lens[1], "turn");
}

/* The end of what may be applied now: the end of the last turn mark
 * received, or all of it when there is no mark yet or too much is held.
 * Searches only what arrived since the last call. */
static size_t apply_limit(void) {
    size_t at = R.mark_scan;
    while (at < R.rlen) {
        link_msg m;
        int parsed = parse_msg(R.rbuf + at, R.rlen - at, &m);
        if (parsed == 0) break;
        if (parsed < 0) { /* refused when it is reached: nothing after it matters */
            R.mark_end = R.rlen;
            break;
        }
        size_t from = at;
        at += m.consumed;
        if (is_turn_mark(&m))
            R.turn_marks = 1, R.mark_end = at;
        else if (from == R.mark_end && is_ping(&m))
            R.mark_end = at; /* a liveness PING right after a mark holds nothing back */
    }
    R.mark_scan = at;
    if (!R.turn_marks || R.rlen - R.mark_end > LOG_HOLD_MAX) return R.rlen;
    return R.mark_end;
}

/* A turn that holds a REBASE (the primary compacted a database between two
 * feeds): the rebuild runs on a thread while the link waits, so the turn's
 * messages before the REBASE would be applied and those after it not, for
 * the whole rebuild. When nothing before it in the turn concerns its
 * database, the REBASE is started first and the turn applied whole once it
 * is done. 1: started; -1: drop the link; 0: nothing to do. */
static int rebase_first(size_t limit) {
    uint32_t named = 0; /* databases the messages ahead of it concern */
    for (size_t at = 0; at < limit;) {
        link_msg m;
        uint64_t db;
        if (parse_msg(R.rbuf + at, R.rlen - at, &m) <= 0) return 0;
        if (!m.is_error && !m.is_status && m.argc >= 2 && !is_ping(&m) && arg_u64(&m, 1, &db) &&
            db < SERVER_DBS) {
            if (m.argc == 10 && eq_nocase(m.argv[0], m.lens[0], "rebase")) {
                if (at == 0 || (named & (1u << db))) return 0;
                R.early_rebase_at = at + 1;
                return rebase_start(&m, (int)db);
            }
            named |= 1u << db;
        }
        at += m.consumed;
    }
    return 0;
}

static int log_span(const link_msg *m, uint64_t *db, uint64_t *from, uint64_t *end,
                    uint64_t *turn_end) {
    if (m->argc != 5 || m->lens[0] != 3 || strncasecmp(m->argv[0], "log", 3) != 0 ||
        !arg_u64(m, 1, db) || !arg_u64(m, 2, from) || !arg_u64(m, 3, turn_end))
        return 0;
    *end = *from + m->lens[4];
    return 1;
}

/* 1 when the LOG at pos must wait for the rest of its turn. */
static int log_waits_for_its_turn(size_t pos, const link_msg *m) {
    uint64_t db, from, end, turn_end;
    if (!log_span(m, &db, &from, &end, &turn_end) || end >= turn_end || db >= SERVER_DBS)
        return 0;
    /* A copy built beside the served file is not read before it is whole;
     * bytes that do not continue the file are refused at once. */
    simdr_store *st = srv.db[db].store;
    if (R.stage[db].active || R.rlen - pos > LOG_HOLD_MAX || from != (st ? simdr_file_size(st) : 0))
        return 0;
    /* The messages up to hold_scan were searched when this LOG was held
     * before (it is the one at pos again: nothing before it was applied). */
    size_t at = R.hold_scan > pos + m->consumed ? R.hold_scan : pos + m->consumed;
    while (at < R.rlen) {
        link_msg next;
        int parsed = parse_msg(R.rbuf + at, R.rlen - at, &next);
        if (parsed == 0) break; /* not all here yet */
        if (parsed < 0) return 0;  /* refused when its turn comes */
        uint64_t ndb, nfrom, nend, nturn;
        if (log_span(&next, &ndb, &nfrom, &nend, &nturn)) {
            if (ndb == db && nend == nturn) return 0; /* a turn ends within what arrived */
        } else if (next.argc >= 2 && !next.is_error && !next.is_status) {
            uint64_t other;
            if (!arg_u64(&next, 1, &other) || other == db) return 0; /* RESET, FOLLOW, ... */
        }
        at += next.consumed;
    }
    R.hold_scan = at;
    return 1;
}

/* Handles the whole messages received; the rest waits for more bytes. */
static void link_process(void) {
    int acked[SERVER_DBS] = {0};
    size_t pos = 0, limit = apply_limit();
    if (R.turn_marks && !R.early_rebase_at) {
        int early = rebase_first(limit);
        if (early < 0) return link_close("bad message");
        if (early > 0) { /* the turn waits for the rebuild (rebase_finish) */
            event_del(R.ev);
            return;
        }
    }
    while (pos < limit) {
        link_msg m;
        int rc = parse_msg(R.rbuf + pos, R.rlen - pos, &m);
        if (rc == 0) break;
        if (rc < 0) {
            link_refuse("malformed message: %s", m.bad);
            return link_close("bad message");
        }
        if (R.early_rebase_at == pos + 1) { /* started ahead of its turn, done */
            R.early_rebase_at = 0;
            pos += m.consumed;
            continue;
        }
        if (!R.turn_marks && log_waits_for_its_turn(pos, &m)) break;
        R.hold_scan = 0;
        rc = handle_msg(&m, acked);
        if (rc < 0) return link_close("bad message");
        pos += m.consumed;
        if (rc > 0) { /* a REBASE runs: what follows waits for it */
            event_del(R.ev);
            break;
        }
    }
    memmove(R.rbuf, R.rbuf + pos, R.rlen - pos);
    R.rlen -= pos;
    R.mark_scan = R.mark_scan > pos ? R.mark_scan - pos : 0;
    R.mark_end = R.mark_end > pos ? R.mark_end - pos : 0;
    R.hold_scan = R.hold_scan > pos ? R.hold_scan - pos : 0;
    if (!R.rlen && R.rcap > FEED_CHUNK_MAX) { /* grown for one large entry: give it back */
        free(R.rbuf);
        R.rbuf = NULL;
        R.rcap = 0;
    }
    for (int db = 0; db < SERVER_DBS && R.fd >= 0; db++)
        if (acked[db]) send_ack(db);
}

static void link_connect(void) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", R.port);
    R.next_attempt_ms = now_ms() + R.retry_ms;
    memset(R.announced, 0, sizeof R.announced);
    if (getaddrinfo(R.host, port, &hints, &res) != 0 || !res) {
        server_log(LOG_WARNING_, "cannot resolve primary %s", R.host);
        return;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0 && errno != EINPROGRESS) {
        close(fd);
        return;
    }
    R.fd = fd;
    R.connecting = 1;
    R.last_recv_ms = now_ms();
    R.ev = event_new(srv.base, fd, EV_WRITE, on_link, NULL);
    if (!R.ev || event_add(R.ev, NULL) != 0) link_close("event");
}

/* ======================================================================== */
/* Configuration, commands, hooks                                           */
/* ======================================================================== */

static void set_primary(const char *host, int port) {
    if (R.fd >= 0 || R.connecting) link_close("primary changed");
    free(R.host);
    R.host = host ? strdup(host) : NULL;
    R.port = port;
    R.next_attempt_ms = 0;
    memset(R.primary_tail, 0, sizeof R.primary_tail);
}

long long replica_timeout_seconds(void) { return R.timeout_ms / 1000; }

int replica_config_option(const char *name, char **vals, int nvals, char *err, size_t cap) {
    if (!strcmp(name, "replicaof") || !strcmp(name, "slaveof")) {
        if (nvals == 1 && !strcasecmp(vals[0], "no")) return 1;
        long port = nvals == 2 ? strtol(vals[1], NULL, 10) : -1;
        if (nvals != 2 || port <= 0 || port > 65535) {
            snprintf(err, cap, "replicaof needs HOST PORT");
            return -1;
        }
        set_primary(vals[0], (int)port);
        return 1;
    }
    if (!strcmp(name, "debug-repl-no-rebase")) {
        /* tests and benchmarks only: a compaction is followed by a full copy */
        if (nvals != 1 || (strcmp(vals[0], "0") && strcmp(vals[0], "1"))) {
            snprintf(err, cap, "%s needs 0 or 1", name);
            return -1;
        }
        R.no_rebase = vals[0][0] == '1';
        return 1;
    }
    if (!strcmp(name, "repl-timeout") || !strcmp(name, "debug-repl-retry-ms")) {
        /* repl-timeout SECONDS: a primary silent that long (it pings every
         * second) is dropped and reconnected. debug-repl-retry-ms MS, tests
         * only: the pause before reconnecting (default 1000). */
        char *end = NULL;
        long long v = nvals == 1 && *vals[0] >= '0' && *vals[0] <= '9'
                          ? strtoll(vals[0], &end, 10) : -1;
        if (v < 1 || *end || v > 86400000) {
            snprintf(err, cap, "%s needs a positive number", name);
            return -1;
        }
        if (!strcmp(name, "repl-timeout"))
            R.timeout_ms = v * 1000;
        else
            R.retry_ms = v;
        return 1;
    }
    if (!strcmp(name, "masterauth") || !strcmp(name, "primaryauth")) {
        free(R.auth);
        R.auth = nvals && *vals[0] ? strdup(vals[0]) : NULL;
        return 1;
    }
    if (!strcmp(name, "masterauth-file") || !strcmp(name, "primaryauth-file")) {
        FILE *f = fopen(vals[0], "r");
        if (!f) {
            snprintf(err, cap, "cannot read %s: %s", vals[0], strerror(errno));
            return -1;
        }
        char line[4096];
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        free(R.auth);
        R.auth = *line ? strdup(line) : NULL;
        explicit_bzero(line, sizeof line);
        return 1;
    }
    return 0;
}

int replica_forbids(const command_def *cmd) {
    return replica_is_replica() && (cmd->flags & CMD_WRITE);
}

/* Writes refused on a replica: Redis's READONLY error. 1 when refused. */
int replica_refuses(client *c, const command_def *cmd) {
    if (!replica_is_replica()) return 0;
    if (replica_forbids(cmd)) {
        reply_error(c, "READONLY You can't write against a read only replica.");
        return 1;
    }
    if (cmd->fn == cmd_bgrewriteaof) {
        reply_error(c, "ERR a replica keeps its files byte for byte as the primary's: "
                       "compact the primary");
        return 1;
    }
    return 0;
}

/* Promotion: this file is a prefix of the primary file it followed;
 * replicas of that primary may resume on it. From here on it appends its
 * own bytes, so it no longer claims to follow that file. */
static void promote(void) {
    for (int db = 0; db < SERVER_DBS; db++) {
        simdr_log_state st;
        R.st.alias_own[db] = R.st.alias_of[db] = 0;
        if (R.st.follows[db] && db_log_state(db, &st) == SIMDR_OK && srv.db[db].store) {
            R.st.alias_own[db] = st.identity;
            R.st.alias_of[db] = R.st.follows[db];
            R.st.alias_tail[db] = st.tail;
            R.st.alias_run[db] = R.st.run[db];
        }
        R.st.follows[db] = R.st.run[db] = 0;
        /* what it holds now came from the old primary; what it
         * appends from here on, only this run can have sent */
        note_found(db);
        /* Records with TTLs came in as replicated bytes, which the
         * expiry walk does not watch for: as a primary it must walk
         * (and delete) them, as after a restart. */
        if (srv.db[db].store) srv.db[db].may_have_ttl = 1;
    }
    state_save();
}

void cmd_replicaof(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    if (eq_nocase(argv[1], lens[1], "no") && eq_nocase(argv[2], lens[2], "one")) {
        if (replica_is_replica()) {
            promote();
            set_primary(NULL, 0);
            server_log(LOG_NOTICE_, "promoted to primary (REPLICAOF NO ONE)");
        }
        reply_ok(c);
        return;
    }
    uint64_t port;
    if (!parse_u64(argv[2], lens[2], &port) || port == 0 || port > 65535) {
        reply_error(c, "ERR Invalid master port");
        return;
    }
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(lens[1] < 255 ? lens[1] : 255), argv[1]);
    if (R.host && !strcmp(R.host, host) && R.port == (int)port) {
        /* As Redis: nothing to do, and a full copy in progress goes on
         * (dropping the link would start it over). */
        reply_simple(c, "OK Already connected to specified master");
        return;
    }
    /* A primary turned replica stops feeding its own replicas. */
    while (R.nfeeds) {
        client_schedule_close(R.feeds[R.nfeeds - 1]->c);
        feed_drop(R.nfeeds - 1);
    }
    unblock_waiters();
    set_primary(host, (int)port);
    server_log(LOG_NOTICE_, "replicating %s:%d", host, (int)port);
    reply_ok(c);
}

void replica_store_closing(void) {
    /* A prefix rebuild reads the served store on its thread: the link's
     * close waits for it and throws its work away. */
    if (R.host && (R.fd >= 0 || R.rebase.active))
        link_close("a store is reopened after a failed write or sync");
}

void replica_store_reopened(void) {
    if (R.host) return; /* a replica connects again from its tails (replica_store_closing) */
    uint64_t old = R.run_id;
    while (R.run_id == old || !R.run_id)
        if (getrandom(&R.run_id, sizeof R.run_id, 0) != (ssize_t)sizeof R.run_id)
            R.run_id = old * 6364136223846793005u + 1442695040888963407u;
    for (int db = 0; db < SERVER_DBS; db++) note_found(db);
    while (R.nfeeds) {
        client_schedule_close(R.feeds[R.nfeeds - 1]->c);
        feed_drop(R.nfeeds - 1);
    }
}

void replica_start(void) {
    state_load();
    if (getrandom(&R.run_id, sizeof R.run_id, 0) != (ssize_t)sizeof R.run_id)
        R.run_id = (uint64_t)now_ms() * 1000003u ^ (uint64_t)getpid() << 40;
    if (!R.run_id) R.run_id = 1;
    for (int db = 0; db < SERVER_DBS; db++) {
        note_found(db);
        stage_drop(db); /* a copy cut short by a crash */
    }
    /* A replica restarted without --replicaof (promoted by its
     * configuration) is a primary whose clients write: were it to go on
     * naming the file it followed, a later REPLICAOF could resume its own
     * writes as the primary's bytes when its last entry matches the
     * primary's at that offset. It is promoted as by REPLICAOF NO ONE. */
    int followed = 0;
    for (int db = 0; db < SERVER_DBS; db++) followed |= R.st.follows[db] != 0;
    if (!R.host && followed) {
        promote();
        server_log(LOG_NOTICE_, "started without --replicaof after running as a replica: "
                                "promoted to primary (as REPLICAOF NO ONE)");
    }
}

/* Before the end-of-turn flush: only turns that wrote (or a feed that had
 * to stop early) have anything to send. */
void replica_after_turn(int wrote) {
    if (R.nfeeds && (wrote || R.behind)) feed_all(now_ms());
}

void replica_feed_now(void) {
    if (R.nfeeds) feed_all(now_ms());
}

void replica_cron(long long now) {
    if (R.rebase.active && atomic_load_explicit(&R.rebase.done, memory_order_acquire))
        rebase_finish();
    if (R.host && R.fd < 0 && now >= R.next_attempt_ms) link_connect();
    /* not read while a prefix is rebuilt: silence is expected */
    if (R.host && R.fd >= 0 && !R.rebase.active && now - R.last_recv_ms > R.timeout_ms) {
        server_log(LOG_WARNING_, "primary %s:%d sent nothing for %lld ms (repl-timeout)",
                   R.host, R.port, now - R.last_recv_ms);
        link_close("timeout");
    }
    if (R.host && R.fd >= 0 && R.link_up && now - R.last_io_ms > 1000) {
        /* keep the primary's view of our tails fresh (and the link checked) */
        for (int db = 0; db < SERVER_DBS && R.fd >= 0; db++)
            if (srv.db[db].store) send_ack(db);
        R.last_io_ms = now;
    }
    if (R.waiters) check_waiters(now);
    if (R.nfeeds) feed_all(now);
}

void replica_shutdown(void) {
    rebase_abort();
    if (R.fd >= 0) link_close("shutdown");
    for (int db = 0; db < SERVER_DBS; db++)
        if (R.stage[db].active) stage_drop(db);
    while (R.waiters) waiter_remove(R.waiters);
    while (R.nfeeds) {
        free(R.feeds[R.nfeeds - 1]);
        R.nfeeds--;
    }
    free(R.host);
    free(R.auth);
    free(R.rbuf);
    free(R.chunk);
    R.host = R.auth = NULL;
    R.rbuf = NULL;
    R.chunk = NULL;
}

/* master_link_status: up once the link is up and serves the primary's data:
 * every database named (RESET, FOLLOW or REBASE done) and no full copy or
 * rebuild under way. (Before the first message about a database, a restarted
 * replica still serves its old copy of it, which the primary may replace.) */
static int link_in_sync(void) {
    if (!R.link_up || R.rebase.active) return 0;
    for (int db = 0; db < SERVER_DBS; db++)
        if (!R.announced[db] || R.stage[db].active || R.copy_to[db]) return 0;
    return 1;
}

void replica_info(struct evbuffer *b) {
    long long now = now_ms();
    uint64_t offset = 0;
    for (int db = 0; db < SERVER_DBS; db++)
        if (srv.db[db].store) offset += simdr_file_size(srv.db[db].store);
    if (R.host) {
        uint64_t lag = 0;
        int syncing = 0;
        for (int db = 0; db < SERVER_DBS; db++) {
            simdr_store *s = R.stage[db].active ? R.stage[db].store : srv.db[db].store;
            uint64_t mine = s ? simdr_file_size(s) : 0;
            if (R.primary_tail[db] > mine) lag += R.primary_tail[db] - mine;
            if (R.stage[db].active) syncing = 1;
        }
        if (R.rebase.active) syncing = 1;
        syncing = syncing || lag > 0;
        evbuffer_add_printf(b,
                            "role:slave\r\nmaster_host:%s\r\nmaster_port:%d\r\n"
                            "master_link_status:%s\r\nmaster_last_io_seconds_ago:%lld\r\n"
                            "master_sync_in_progress:%d\r\nslave_repl_offset:%llu\r\n"
                            "slave_read_only:1\r\nsimdr_repl_lag_bytes:%llu\r\n"
                            "simdr_repl_full_copies:%llu\r\nsimdr_repl_rebases:%llu\r\n"
                            "simdr_repl_rebase_failures:%llu\r\nsimdr_repl_log_bytes:%llu\r\n"
                            "connected_slaves:0\r\nmaster_repl_offset:%llu\r\n",
                            R.host, R.port, link_in_sync() ? "up" : "down",
                            link_in_sync() ? (now - R.last_io_ms) / 1000 : -1, syncing,
                            (unsigned long long)offset, (unsigned long long)lag,
                            (unsigned long long)R.full_copies, (unsigned long long)R.rebases,
                            (unsigned long long)R.rebase_failures,
                            (unsigned long long)R.log_bytes, (unsigned long long)offset);
        return;
    }
    evbuffer_add_printf(b, "role:master\r\nconnected_slaves:%d\r\n", R.nfeeds);
    for (int i = 0; i < R.nfeeds; i++) {
        feed *f = R.feeds[i];
        uint64_t acked = 0, lag = 0;
        for (int db = 0; db < SERVER_DBS; db++) {
            uint64_t tail = srv.db[db].store ? simdr_file_size(srv.db[db].store) : 0;
            acked += f->acked[db];
            if (tail > f->acked[db]) lag += tail - f->acked[db];
        }
        char ip[80];
        snprintf(ip, sizeof ip, "%s", f->c->addr);
        char *colon = strrchr(ip, ':');
        if (colon) *colon = 0;
        evbuffer_add_printf(b, "slave%d:ip=%s,port=%d,state=online,offset=%llu,lag=%lld,"
                               "lag_bytes=%llu\r\n",
                            i, ip, f->port, (unsigned long long)acked,
                            (now - f->last_ack_ms) / 1000, (unsigned long long)lag);
    }
    evbuffer_add_printf(b, "master_repl_offset:%llu\r\nsimdr_repl_resets_sent:%llu\r\n"
                           "simdr_repl_rebases_sent:%llu\r\n",
                        (unsigned long long)offset, (unsigned long long)R.resets_sent,
                        (unsigned long long)R.rebases_sent);
}
