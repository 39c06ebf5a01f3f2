/*
 * net.c - connections of simdr-server on a libevent loop: listening sockets,
 * accepting with the client limit, reading and parsing requests, and the
 * end-of-turn flush that writes every client's replies after one shared sync
 * (durability "always": no reply of a write leaves before its fdatasync).
 * With --threads N the reads and the reply writes of a turn's clients run as
 * I/O thread jobs (iothreads.c); parsing and commands stay on this thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

#define READ_CHUNK (16 * 1024)

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void spool_end(struct client *c);

static void addr_string(const struct sockaddr_storage *ss, char *buf, size_t cap) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
        port = ntohs(s->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
        port = ntohs(s->sin6_port);
    }
    /* Redis's form: an IPv6 address in brackets ("[::1]:6379"), which
     * CLIENT LIST shows and CLIENT KILL ADDR takes */
    snprintf(buf, cap, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

static void mark_pending(client *c) {
    if (c->flags & CLIENT_PENDING) return;
    c->flags |= CLIENT_PENDING;
    c->pending_next = srv.pending;
    srv.pending = c;
}

void client_schedule_close(client *c) {
    if (c->flags & CLIENT_CLOSED) return;
    c->flags |= CLIENT_CLOSED;
    event_del(c->rev);
    event_del(c->wev);
    mark_pending(c);
}

void client_free(client *c) {
    replica_client_freed(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv.clients = c->next;
    if (c->next) c->next->prev = c->prev;
    srv.nclients--;
    spool_end(c); /* an unfinished value is dropped with its unnamed file */
    client_discard_multi(c);
    client_unwatch(c);
    free(c->mq);
    free(c->watched);
    event_free(c->rev);
    event_free(c->wev);
    evbuffer_free(c->out); /* releases entries still referenced */
    close(c->fd);
    resp_parser_free(&c->parser);
    free(c->qbuf);
    free(c->name);
    free(c);
}

/* Descriptors can run out below maxclients (a lowered open file limit,
 * store, spool and compaction files). A connection accept() cannot take
 * stays in the backlog and keeps the listening socket readable: the loop
 * would call accept again at once, forever. So one descriptor is held in
 * reserve: on EMFILE/ENFILE it is given up for a moment to accept the
 * connection, answer it the maxclients error and close it. Should even that
 * fail, the listeners pause for ACCEPT_PAUSE_MS. Either way the failure is
 * logged at most once a second. */
#define ACCEPT_PAUSE_MS 100
static int spare_fd = -1;
static struct event *accept_resume_ev;
static long long accept_error_logged_ms;
static uint64_t accept_errors_unlogged;

static void reserve_spare_fd(void) {
    if (spare_fd < 0) spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void reject_client(int fd) {
    static const char msg[] = "-ERR max number of clients reached\r\n";
    ssize_t w = write(fd, msg, sizeof msg - 1);
    (void)w;
    close(fd);
    srv.rejected_connections++;
}

static void log_accept_error(int err) {
    long long now = now_ms();
    accept_errors_unlogged++;
    if (now - accept_error_logged_ms < 1000) return;
    accept_error_logged_ms = now;
    server_log(LOG_WARNING_, "accept: %s (%llu connections refused or waiting since the last "
               "such message)", strerror(err), (unsigned long long)accept_errors_unlogged);
    accept_errors_unlogged = 0;
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    reserve_spare_fd();
    for (int i = 0; i < srv.nlisteners; i++) event_add(srv.listeners[i], NULL);
}

static void pause_accepting(void) {
    if (!accept_resume_ev) accept_resume_ev = evtimer_new(srv.base, resume_accepting, NULL);
    if (!accept_resume_ev) return; /* cannot pause: the next turn tries again */
    for (int i = 0; i < srv.nlisteners; i++) event_del(srv.listeners[i]);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(accept_resume_ev, &tv);
}

/* 1: the connection was taken off the backlog with the spare descriptor
 * and refused; 0: the listeners are paused instead. */
static int refuse_without_descriptors(evutil_socket_t lfd) {
    if (spare_fd >= 0) {
        close(spare_fd);
        spare_fd = -1;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) reject_client(fd);
        reserve_spare_fd();
        if (fd >= 0 && spare_fd >= 0) return 1;
    }
    pause_accepting();
    return 0;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg) {
    (void)what;
    (void)arg;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED)
                return;
            log_accept_error(err);
            if ((err == EMFILE || err == ENFILE) && refuse_without_descriptors(lfd)) continue;
            if (err != EMFILE && err != ENFILE) pause_accepting(); /* ENOBUFS, ENOMEM, ... */
            return;
        }
        if (srv.shutting_down) {
            close(fd);
            continue;
        }
        if (srv.nclients >= srv.cfg.maxclients) {
            reject_client(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        client *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->spool_fd = -1;
        c->id = ++srv.next_client_id;
        c->resp = 2;
        c->authenticated = srv.cfg.requirepass == NULL;
        c->out = evbuffer_new();
        c->rev = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_read, c);
        c->wev = event_new(srv.base, fd, EV_WRITE | EV_PERSIST, on_write, c);
        resp_parser_init(&c->parser);
        c->ctime_ms = c->last_ms = now_ms();
        addr_string(&ss, c->addr, sizeof c->addr);
        struct sockaddr_storage ls;
        socklen_t ll = sizeof ls;
        if (getsockname(fd, (struct sockaddr *)&ls, &ll) == 0) addr_string(&ls, c->laddr, sizeof c->laddr);
        snprintf(c->last_cmd, sizeof c->last_cmd, "NULL");
        c->next = srv.clients;
        if (srv.clients) srv.clients->prev = c;
        srv.clients = c;
        srv.nclients++;
        srv.total_connections++;
        if (!c->out || !c->rev || !c->wev) {
            client_free(c);
            continue;
        }
        event_add(c->rev, NULL);
    }
}

static int ensure_room(client *c, size_t want) {
    /* Drop the consumed prefix when it is large or room is short. */
    if (c->qpos && (c->qpos > c->qcap / 2 || c->qcap - c->qlen < want)) {
        memmove(c->qbuf, c->qbuf + c->qpos, c->qlen - c->qpos);
        c->qlen -= c->qpos;
        c->qpos = 0;
    }
    if (c->qcap - c->qlen >= want) return 1;
    size_t cap = c->qcap ? c->qcap : READ_CHUNK;
    while (cap - c->qlen < want) cap *= 2;
    char *n = realloc(c->qbuf, cap);
    if (!n) return 0;
    c->qbuf = n;
    c->qcap = cap;
    return 1;
}

/* A SET whose value is SPOOL_MIN bytes or more is not held in the query
 * buffer: once its key has arrived, the value's bytes go to an unnamed file
 * (O_TMPFILE in --dir) as they arrive, and when the last one is there the
 * record is streamed from that file into the store. Memory stays at one read
 * buffer whatever the value's size (proto-max-bulk-len still applies); a
 * client that disconnects midway leaves nothing (the file has no name).
 * Only "SET key value" (three arguments) is spooled: the options of a longer
 * SET follow the value, so it cannot be told apart from one in time. */
#define SPOOL_MIN (1024 * 1024)
#define SPOOL_READ (256 * 1024)

static int spool_start(client *c) {
    resp_parser *p = &c->parser;
    if (p->kind != '*' || p->argc != 2 || p->mb_left != 1 || p->bulk_len < SPOOL_MIN) return 0;
    if ((c->flags & (CLIENT_MULTI | CLIENT_CLOSE_AFTER_REPLY)) ||
        (srv.cfg.requirepass && !c->authenticated) || replica_is_replica())
        return 0; /* a replica refuses the SET through the command path (READONLY) */
    char *base = c->qbuf + c->qpos;
    if (!eq_nocase(base + p->argv[0].off, p->argv[0].len, "set")) return 0;
    int fd = open(srv.cfg.dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return 0; /* no unnamed files here: the value is buffered instead */
    size_t klen = p->argv[1].len;
    char *key = malloc(klen ? klen : 1);
    if (!key) {
        close(fd);
        return 0;
    }
    memcpy(key, base + p->argv[1].off, klen);
    c->spool_fd = fd;
    c->spool_key = key;
    c->spool_klen = klen;
    c->spool_len = (uint64_t)p->bulk_len;
    c->spool_got = 0;
    c->spool_crlf = 2;
    c->spool_error = 0;
    c->qpos += p->pos;
    resp_parser_reset(p);
    return 1;
}

static void spool_end(client *c) {
    if (c->spool_fd >= 0) close(c->spool_fd);
    c->spool_fd = -1;
    free(c->spool_key);
    c->spool_key = NULL;
}

static void spool_finish(client *c) {
    snprintf(c->last_cmd, sizeof c->last_cmd, "set");
    srv.total_commands++;
    c->flags |= CLIENT_WROTE;
    if (c->spool_error) {
        reply_error(c, "ERR storage error: spooling the value failed: %s",
                    strerror(c->spool_error));
        spool_end(c);
        return;
    }
    if (replica_is_replica()) { /* became one while the value arrived */
        reply_error(c, "READONLY You can't write against a read only replica.");
        spool_end(c);
        return;
    }
    if (misconf_refuses(c)) {
        spool_end(c);
        return;
    }
    ks_pending_safe_point();
    server_db *d = client_db(c);
    ks_ref ref;
    int rc = ks_lookup(d, c->spool_key, c->spool_klen, now_ms(), &ref);
    if (rc >= 0) {
        ks_ref_release(&ref);
        rc = ks_write_fd(d, &ref, c->spool_key, c->spool_klen, c->spool_fd, c->spool_len, 0);
    }
    if (rc)
        reply_error(c, "%s", store_error(rc));
    else
        reply_ok(c);
    spool_end(c);
}

/* Moves the spooled value's bytes from the query buffer to its file. */
static void spool_feed(client *c) {
    size_t avail = c->qlen - c->qpos;
    uint64_t left = c->spool_len - c->spool_got;
    size_t n = avail < left ? avail : (size_t)left;
    const char *p = c->qbuf + c->qpos;
    size_t done = 0;
    while (done < n && !c->spool_error) {
        ssize_t w = write(c->spool_fd, p + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            c->spool_error = w < 0 ? errno : EIO;
            break;
        }
        done += (size_t)w;
    }
    c->spool_got += n; /* after a failed write the rest is read and dropped */
    c->qpos += n;
    /* As Redis: the two bytes after the data are skipped, not checked. */
    while (c->spool_got == c->spool_len && c->spool_crlf && c->qpos < c->qlen) {
        c->qpos++;
        c->spool_crlf--;
    }
    if (c->spool_got == c->spool_len && !c->spool_crlf) spool_finish(c);
}

static void process_input(client *c) {
    static char **argv;
    static size_t *lens;
    static int cap;
    while (c->qpos < c->qlen && !(c->flags & (CLIENT_CLOSE_AFTER_REPLY | CLIENT_CLOSED))) {
        if (c->spool_fd >= 0) {
            spool_feed(c);
            if (c->spool_fd >= 0) break;
            continue;
        }
        resp_limits lim = {srv.cfg.proto_max_bulk_len,
                           srv.cfg.requirepass != NULL && !c->authenticated};
        int rc = resp_parse(&c->parser, c->qbuf + c->qpos, c->qlen - c->qpos, &lim);
        if (rc == RESP_MORE) {
            if (spool_start(c)) continue;
            break;
        }
        if (rc == RESP_ERROR) {
            reply_error(c, "%s", c->parser.error);
            server_log(LOG_VERBOSE_, "protocol error from %s: %s", c->addr, c->parser.error);
            c->flags |= CLIENT_CLOSE_AFTER_REPLY;
            resp_parser_reset(&c->parser);
            c->qpos = c->qlen;
            break;
        }
        resp_parser *p = &c->parser;
        if (!p->empty) {
            if (p->argc > cap) {
                int ncap = p->argc * 2;
                char **na = realloc(argv, (size_t)ncap * sizeof *na);
                if (na) argv = na;
                size_t *nl = realloc(lens, (size_t)ncap * sizeof *nl);
                if (nl) lens = nl;
                if (!na || !nl) {
                    client_schedule_close(c);
                    break;
                }
                cap = ncap;
            }
            char *base = c->qbuf + c->qpos;
            for (int i = 0; i < p->argc; i++) {
                argv[i] = base + p->argv[i].off;
                lens[i] = p->argv[i].len;
            }
            c->last_ms = now_ms();
            commands_execute(c, p->argc, argv, lens);
        }
        c->qpos += p->consumed;
        resp_parser_reset(p);
    }
    if (c->qpos == c->qlen) c->qpos = c->qlen = 0;
    /* A command of many arguments grew the argument table: give it back once
     * no command is in progress. */
    if (c->parser.argcap > 4096 && c->parser.argc == 0 && !c->parser.kind)
        resp_parser_free(&c->parser);
    /* A big argument grew the buffer: give the memory back once it is used. */
    if (c->qcap > 1024 * 1024 && c->qlen - c->qpos <= READ_CHUNK && !c->parser.need_total) {
        size_t left = c->qlen - c->qpos;
        memmove(c->qbuf, c->qbuf + c->qpos, left);
        char *n = realloc(c->qbuf, READ_CHUNK * 2);
        if (n) {
            c->qbuf = n;
            c->qcap = READ_CHUNK * 2;
        }
        c->qpos = 0;
        c->qlen = left;
    }
}

/* What a read of a client's socket found (client.io_status). */
enum read_status { READ_GOT, READ_NOTHING, READ_CLOSE, READ_QUERY_LIMIT };

/* Per-thread byte counters of I/O jobs, summed into srv.net_in/net_out by the
 * loop thread once the job is done (one cache line each). */
typedef struct io_counters {
    _Alignas(64) uint64_t in;
    uint64_t out, steps;
} io_counters;
static io_counters io_count[SERVER_MAX_THREADS];

/* Reads what the socket has into the query buffer. Touches only c and
 * *bytes_in, so an I/O thread may run it (the loop thread waits meanwhile). */
static int read_input(client *c, uint64_t *bytes_in) {
    size_t want = c->spool_fd >= 0 ? SPOOL_READ : READ_CHUNK;
    /* A big bulk argument: make room for all of it at once (contiguous). */
    if (c->parser.need_total > c->qlen - c->qpos && c->parser.need_total >= RESP_BIG_ARG)
        want = c->parser.need_total - (c->qlen - c->qpos);
    if (!ensure_room(c, want)) return READ_CLOSE;
    ssize_t n = read(c->fd, c->qbuf + c->qlen, c->qcap - c->qlen);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return READ_NOTHING;
        return READ_CLOSE;
    }
    if (n == 0) return READ_CLOSE;
    *bytes_in += (uint64_t)n;
    c->qlen += (size_t)n;
    c->last_ms = now_ms();
    if ((long long)(c->qlen - c->qpos) > srv.cfg.query_buffer_limit) return READ_QUERY_LIMIT;
    return READ_GOT;
}

/* On the loop thread: runs the commands a read brought. */
static void handle_input(client *c, int status) {
    /* Nothing new: only a client just unblocked has input waiting to run. */
    if (status == READ_NOTHING && (c->qpos == c->qlen || (c->flags & CLIENT_BLOCKED))) return;
    if (status == READ_QUERY_LIMIT)
        server_log(LOG_WARNING_, "closing client %s that reached max query buffer length",
                   c->addr);
    if (status != READ_GOT && status != READ_NOTHING) {
        client_schedule_close(c);
        return;
    }
    if (!(c->flags & CLIENT_BLOCKED)) process_input(c);
    /* The argument table of a command still arriving counts as query memory:
     * its arguments parsed so far (argc; 0 between commands). The capacity
     * left by a big command that completed counts for nothing, as in Redis,
     * where a complete command under the limit never closes the client. */
    if ((long long)(c->qlen - c->qpos) + (long long)c->parser.argc * (long long)sizeof(resp_arg) >
        srv.cfg.query_buffer_limit) {
        server_log(LOG_WARNING_, "closing client %s that reached max query buffer length",
                   c->addr);
        client_schedule_close(c);
        return;
    }
    mark_pending(c);
}

/* A turn's list of clients for one I/O job (--threads > 1), kept between
 * turns so it is allocated once. */
typedef struct client_list {
    client **at;
    size_t n, cap;
} client_list;

static int client_list_push(client_list *l, client *c) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        client **bigger = realloc(l->at, cap * sizeof *bigger);
        if (!bigger) return 0;
        l->at = bigger;
        l->cap = cap;
    }
    l->at[l->n++] = c;
    return 1;
}

/* The clients found readable in this turn, in event order. Their reads run
 * as one I/O job after the loop's callbacks (net_process_reads), then their
 * commands, in that order. */
static client_list reads;

static int queue_read(client *c) {
    if (c->flags & CLIENT_READ_QUEUED) return 1;
    if (!client_list_push(&reads, c)) return 0;
    c->flags |= CLIENT_READ_QUEUED;
    return 1;
}

static void read_step(client *c, int slot) {
    io_count[slot].steps++;
    c->io_status = (c->flags & CLIENT_CLOSED) ? READ_NOTHING : read_input(c, &io_count[slot].in);
}

/* worker_share: the read or write counter of the steps workers ran. */
static void collect_io_counters(uint64_t *worker_share) {
    int slots = iothreads_workers() + 1;
    for (int i = 0; i < slots; i++) {
        srv.net_in += io_count[i].in;
        srv.net_out += io_count[i].out;
        if (i > 0) *worker_share += io_count[i].steps;
        io_count[i].in = io_count[i].out = io_count[i].steps = 0;
    }
}

void net_process_reads(void) {
    if (!reads.n) return;
    if (iothreads_run(read_step, reads.at, reads.n)) srv.threaded_reads += reads.n;
    collect_io_counters(&srv.worker_reads);
    /* A command may close a client later in the list (CLIENT KILL): its
     * input is then dropped, as if the kill had come first. */
    for (size_t i = 0; i < reads.n; i++) {
        client *c = reads.at[i];
        c->flags &= ~(unsigned)CLIENT_READ_QUEUED;
        if (!(c->flags & CLIENT_CLOSED)) handle_input(c, c->io_status);
    }
    reads.n = 0;
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    client *c = arg;
    if (c->flags & CLIENT_CLOSED) return;
    if (srv.cfg.threads > 1 && queue_read(c)) return;
    handle_input(c, read_input(c, &srv.net_in));
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mark_pending(arg);
}

/* Chains of a reply buffer offered to one writev: at most what libevent
 * gathers into one (its NUM_WRITE_IOVEC, 128 on Linux). */
#define WRITE_IOVECS 64

/* Writes what the socket takes now. 1: all written, 0: some left, -1: error.
 * A write the socket took only part of ends the flush (0) as EAGAIN would:
 * the socket's buffer is full, and writing on would follow a slow reader at
 * its own pace, a few kilobytes a call, with the event loop and every other
 * client waiting, and never find the output over its limit (finish_write).
 * Touches only c and *bytes_out, so an I/O thread may run it: the entries a
 * reply references (reply_bulk_entry) are released there as their bytes go
 * out, which the engine allows from any thread. */
static int flush_client(client *c, uint64_t *bytes_out) {
    int rc = 1;
    uint64_t wrote = 0;
    while (evbuffer_get_length(c->out) > 0) {
        struct evbuffer_iovec vec[WRITE_IOVECS];
        int chains = evbuffer_peek(c->out, -1, NULL, vec, WRITE_IOVECS);
        size_t offered = 0;
        for (int i = 0; i < chains && i < WRITE_IOVECS; i++) offered += vec[i].iov_len;
        int n = evbuffer_write_atmost(c->out, c->fd, (ev_ssize_t)offered);
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
            break;
        }
        if (n == 0) {
            rc = 0;
            break;
        }
        wrote += (uint64_t)n;
        if ((size_t)n < offered) {
            rc = 0;
            break;
        }
    }
    /* As Redis: a client taking its replies is not idle (a slow reader of a
     * big reply is not closed by the idle timeout while the bytes flow). */
    if (wrote) {
        *bytes_out += wrote;
        c->last_ms = now_ms();
    }
    return rc;
}

/* On the loop thread, after flush_client: close, or watch for writability. */
static void finish_write(client *c, int rc) {
    if (rc < 0 || (rc == 1 && (c->flags & CLIENT_CLOSE_AFTER_REPLY))) {
        client_free(c);
    } else if (rc == 0) {
        /* A replica's feed may hold one entry above the limit: an entry goes
         * whole, and closing the link would resend it forever. */
        if ((long long)evbuffer_get_length(c->out) >
            srv.cfg.output_buffer_limit + replica_output_allowance(c)) {
            server_log(LOG_WARNING_, "closing client %s: output buffer over %lld bytes", c->addr,
                       srv.cfg.output_buffer_limit);
            client_free(c);
        } else if (!(c->flags & CLIENT_WRITING)) {
            c->flags |= CLIENT_WRITING;
            event_add(c->wev, NULL);
        }
    } else if (c->flags & CLIENT_WRITING) {
        c->flags &= ~(unsigned)CLIENT_WRITING;
        event_del(c->wev);
    }
}

/* ---- group commit (durability always) ----
 *
 * A turn's replies wait for one sync that covers every write of the turn,
 * so the more clients a turn holds, the fewer syncs per request. Under a
 * closed loop of many clients the turns alternate: the replies of a big
 * group go out, the loop wakes for the first few requests that come back
 * and syncs them alone while the rest arrive, then the rest make the next
 * group. So before a turn with writes is synced, the loop keeps reading
 * while fewer clients are in the turn than in the biggest of the last
 * GATHER_HISTORY groups, for at most as long as the last sync took (capped
 * at GATHER_MAX_US): a client then waits at most one sync's time more, to
 * spare the many a whole sync and turn of waiting. A client that went idle
 * costs that wait for GATHER_HISTORY groups at most. A client alone, or
 * clients that all arrived, never wait. (A commit delay, as databases'
 * group commit has; docs/SERVER.md.) */
#define GATHER_HISTORY 8
#define GATHER_MAX_US 1000

static size_t recent_groups[GATHER_HISTORY];
static unsigned recent_next;
static long long last_sync_us;
static struct event *gather_timer;

static void on_gather_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg; /* only ends the wait of event_base_loop below */
}

static size_t turn_clients(void) {
    size_t n = 0;
    for (client *c = srv.pending; c; c = c->pending_next)
        if (!(c->flags & CLIENT_CLOSED)) n++;
    return n;
}

void net_gather_group_commit(void) {
    if (srv.cfg.durability != DURABILITY_ALWAYS || !srv.any_write_this_turn ||
        srv.shutting_down)
        return;
    size_t expected = 0;
    for (unsigned i = 0; i < GATHER_HISTORY; i++)
        if (recent_groups[i] > expected) expected = recent_groups[i];
    long long budget = last_sync_us < GATHER_MAX_US ? last_sync_us : GATHER_MAX_US;
    size_t n = turn_clients();
    if (n < expected && budget > 0) {
        if (!gather_timer) gather_timer = evtimer_new(srv.base, on_gather_timer, NULL);
        long long start = now_us();
        srv.group_commit_waits++;
        while (gather_timer && n < expected && !srv.shutting_down) {
            long long left = budget - (now_us() - start);
            if (left <= 0) break;
            struct timeval tv = {0, (suseconds_t)left};
            evtimer_add(gather_timer, &tv);
            event_base_loop(srv.base, EVLOOP_ONCE);
            evtimer_del(gather_timer);
            net_process_reads();
            n = turn_clients();
        }
    }
    recent_groups[recent_next++ % GATHER_HISTORY] = n;
}

void net_gather_free(void) {
    if (gather_timer) event_free(gather_timer);
    gather_timer = NULL;
}

/* --threads > 1: the clients with replies to write in this turn. */
static client_list writes;

static int queue_write(client *c) { return client_list_push(&writes, c); }

static void write_step(client *c, int slot) {
    io_count[slot].steps++;
    c->io_status = flush_client(c, &io_count[slot].out);
}

/* The end of an event-loop turn: the writes of every client of the turn go
 * out as one batch append per database, then (durability always) one sync,
 * and only then the replies. When the store refused the batch or the sync,
 * the clients that wrote in this turn are closed without their replies: no
 * write the store did not take is acknowledged. So are those whose replies
 * read a record of the batch (a GET in the same turn as another client's
 * SET): no reader is shown a write the store did not take. */
void net_after_turn(void) {
    net_process_reads(); /* none left but at shutdown: the loop thread runs them first */
    ks_flush_pending();
    if (srv.any_write_this_turn && srv.cfg.durability == DURABILITY_ALWAYS) {
        long long start = now_us();
        if (server_sync_all()) srv.write_failed = 1;
        last_sync_us = now_us() - start + 1; /* never 0: a sync took some time */
        srv.group_commits++;
        srv.group_commit_clients += turn_clients();
    }
    srv.any_write_this_turn = 0;
    ks_reopen_failed();
    ks_pending_safe_point();
    int failed = srv.write_failed;
    srv.write_failed = 0;
    client *c = srv.pending;
    srv.pending = NULL;
    while (c) {
        client *next = c->pending_next;
        c->flags &= ~(unsigned)CLIENT_PENDING;
        c->pending_next = NULL;
        if (failed && (c->flags & (CLIENT_WROTE | CLIENT_SAW_PENDING)) &&
            !(c->flags & CLIENT_CLOSED)) {
            server_log(LOG_WARNING_, "closing client %s: %s", c->addr,
                       c->flags & CLIENT_WROTE ? "its writes were not stored"
                                               : "its replies showed writes that were not stored");
            c->flags |= CLIENT_CLOSED;
        }
        c->flags &= ~(unsigned)(CLIENT_WROTE | CLIENT_SAW_PENDING);
        if (c->flags & CLIENT_CLOSED) {
            client_free(c);
        } else if (srv.cfg.threads > 1 && evbuffer_get_length(c->out) > 0 && queue_write(c)) {
            /* written below with the others, as one I/O job */
        } else {
            finish_write(c, flush_client(c, &srv.net_out));
        }
        c = next;
    }
    if (writes.n) {
        if (iothreads_run(write_step, writes.at, writes.n)) srv.threaded_writes += writes.n;
        collect_io_counters(&srv.worker_writes);
        for (size_t i = 0; i < writes.n; i++) finish_write(writes.at[i], writes.at[i]->io_status);
        writes.n = 0;
    }
}

/* At shutdown: give clients up to timeout_ms to take their last replies. */
void net_flush_all_blocking(int timeout_ms) {
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int left = 0;
        for (client *c = srv.clients; c; c = c->next) {
            if (c->flags & CLIENT_CLOSED) continue;
            int rc = flush_client(c, &srv.net_out);
            if (rc == 0) left++;
            if (rc < 0) c->flags |= CLIENT_CLOSED;
        }
        if (!left || now_ms() >= deadline) return;
        usleep(2000);
    }
}

void net_check_timeouts(long long now) {
    if (srv.cfg.timeout <= 0) return;
    for (client *c = srv.clients; c; c = c->next) {
        if (c->flags & CLIENT_CLOSED) continue;
        if (now - c->last_ms > srv.cfg.timeout * 1000 && !replica_exempt_from_timeout(c)) {
            server_log(LOG_VERBOSE_, "closing idle client %s", c->addr);
            client_schedule_close(c);
        }
    }
}

int net_kill_clients(uint64_t id, const char *addr, const char *laddr, int type, int skipme,
                     client *me) {
    int killed = 0;
    for (client *c = srv.clients; c; c = c->next) {
        if (c->flags & CLIENT_CLOSED) continue;
        if (id && c->id != id) continue;
        if (type >= 0 && type != (replica_client_is_feed(c) ? 1 : 0)) continue;
        if (addr && strcmp(addr, c->addr) != 0) continue;
        if (laddr && strcmp(laddr, c->laddr) != 0) continue;
        if (c == me && skipme) continue;
        if (c == me)
            c->flags |= CLIENT_CLOSE_AFTER_REPLY;
        else
            client_schedule_close(c);
        killed++;
    }
    return killed;
}

void client_info_line(client *c, struct evbuffer *out) {
    long long now = now_ms();
    /* Redis's letters: S a replica's link, x in MULTI, b blocked (WAIT). */
    char flags[8];
    int nf = 0;
    if (replica_client_is_feed(c)) flags[nf++] = 'S';
    if (c->flags & CLIENT_MULTI) flags[nf++] = 'x';
    if (c->flags & CLIENT_BLOCKED) flags[nf++] = 'b';
    if (!nf) flags[nf++] = 'N';
    flags[nf] = 0;
    /* Whole, whatever the name's length (no fixed-size line to cut it). */
    evbuffer_add_printf(out,
             "id=%llu addr=%s laddr=%s fd=%d name=%s age=%lld idle=%lld flags=%s db=%d sub=0 "
             "psub=0 ssub=0 multi=%d qbuf=%zu qbuf-free=%zu argv-mem=0 multi-mem=0 rbs=%zu "
             "rbp=0 obl=0 oll=0 omem=%zu tot-mem=%zu events=r cmd=%s user=default redir=-1 "
             "resp=%d\n",
             (unsigned long long)c->id, c->addr, c->laddr, c->fd, c->name ? c->name : "",
             (now - c->ctime_ms) / 1000, (now - c->last_ms) / 1000, flags, c->db,
             (c->flags & CLIENT_MULTI) ? c->mq_len : -1, c->qlen - c->qpos, c->qcap - c->qlen,
             c->qcap, evbuffer_get_length(c->out), c->qcap + evbuffer_get_length(c->out),
             c->last_cmd, c->resp);
}

static int listen_one(const char *addr, int optional) {
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
    char port[16];
    snprintf(port, sizeof port, "%d", srv.cfg.port);
    const char *host = strcmp(addr, "*") == 0 ? NULL : addr;
    if (host == NULL) hints.ai_family = AF_INET;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        server_log(LOG_WARNING_, "bind %s: %s", addr, gai_strerror(rc));
        return optional ? 0 : -1;
    }
    int bound = 0;
    for (ai = res; ai && srv.nlisteners < SERVER_MAX_BINDS * 2; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 511) != 0) {
            int e = errno;
            close(fd);
            if (optional && (e == EADDRNOTAVAIL || e == EAFNOSUPPORT || e == EPROTONOSUPPORT)) {
                server_log(LOG_NOTICE_, "skipping bind %s: %s", addr, strerror(e));
                continue;
            }
            server_log(LOG_WARNING_, "could not bind %s:%d: %s", addr, srv.cfg.port, strerror(e));
            freeaddrinfo(res);
            return -1;
        }
        struct event *ev = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_accept, NULL);
        event_add(ev, NULL);
        srv.listen_fds[srv.nlisteners] = fd;
        srv.listeners[srv.nlisteners++] = ev;
        bound++;
    }
    freeaddrinfo(res);
    if (!bound && !optional) return -1;
    return 0;
}

int net_listen_all(void) {
    reserve_spare_fd();
    for (int i = 0; i < srv.cfg.nbinds; i++) {
        const char *a = srv.cfg.binds[i];
        int optional = a[0] == '-';
        if (listen_one(optional ? a + 1 : a, optional) != 0) return -1;
    }
    if (srv.nlisteners == 0) {
        server_log(LOG_WARNING_, "no address to listen on");
        return -1;
    }
    return 0;
}

void net_close_listeners(void) {
    for (int i = 0; i < srv.nlisteners; i++) {
        event_free(srv.listeners[i]);
        close(srv.listen_fds[i]);
    }
    srv.nlisteners = 0;
    if (accept_resume_ev) event_free(accept_resume_ev);
    accept_resume_ev = NULL;
    if (spare_fd >= 0) close(spare_fd);
    spare_fd = -1;
}
