/*
 * main.c - simdr-server: command-line options and config file, protected
 * mode, startup (databases, listeners), the event loop with its end-of-turn
 * flush, the background tick (idle clients, active expiry, everysec sync,
 * auto-compaction), CONFIG GET/SET parameters and an orderly shutdown.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server.h"

server_state srv;

static const char help_text[] =
    "simdr-server - a Redis-protocol (RESP) server over simdr stores\n"
    "\n"
    "Usage: simdr-server [CONFIG-FILE] [--option value ...]\n"
    "\n"
    "Options (also accepted in the config file as \"name value\" lines):\n"
    "  --dir DIR                   where the store files live (default .); one file\n"
    "                              per database: DIR/db-N.simdr, N = 0..15\n"
    "  --bind ADDR [ADDR...]       addresses to listen on (default 127.0.0.1 -::1;\n"
    "                              a leading '-' means skip it if unavailable)\n"
    "  --port N                    TCP port (default 6379)\n"
    "  --requirepass PASS          password of the default user\n"
    "  --requirepass-file FILE     read the password from FILE (first line)\n"
    "  --durability MODE           no | everysec (default) | always: when writes are\n"
    "                              fdatasynced (always: before the reply is sent; the\n"
    "                              writes of one loop turn share one sync)\n"
    "  --preallocate yes|no        with durability always, append into zeros written\n"
    "                              ahead of the last entry (default yes): each sync is\n"
    "                              then a data write and a device flush, without a\n"
    "                              journal commit; every byte is written twice. Say no\n"
    "                              on copy-on-write file systems (btrfs, ZFS)\n"
    "  --maxclients N              connections accepted at once (default 10000)\n"
    "  --timeout SECONDS           close clients idle this long (default 0 = never)\n"
    "  --auto-compact-percent P    compact a store when P% of it is garbage (default\n"
    "                              50; 0 = off); files under 1 MiB are left alone\n"
    "  --logfile FILE              log here instead of standard error\n"
    "  --loglevel LEVEL            debug | verbose | notice (default) | warning\n"
    "  --proto-max-bulk-len BYTES  longest bulk string (default 512mb)\n"
    "  --client-query-buffer-limit BYTES   per client (default 1gb)\n"
    "  --client-output-buffer-limit BYTES  per client, slow readers are closed (1gb)\n"
    "  --hz N                      background ticks per second (default 10)\n"
    "  --active-expire-effort N    records examined per tick and database (1000)\n"
    "  --threads N                 I/O threads, the event-loop thread included (default\n"
    "                              1, at most 64): sockets are read and replies written\n"
    "                              on N threads, commands still run on one\n"
    "  --replicaof HOST PORT       follow that primary: copy its store files, then its\n"
    "                              appends (read-only; REPLICAOF NO ONE promotes)\n"
    "  --masterauth PASS, --masterauth-file FILE\n"
    "                              the primary's password (default: --requirepass)\n"
    "  --repl-timeout SECONDS      drop and re-establish a link to the primary after\n"
    "                              that long without a byte from it (default 60)\n"
    "  --debug-repl-retry-ms MS    tests only: the pause before a replica reconnects\n"
    "                              (default 1000)\n"
    "  --debug-repl-no-rebase 1    tests only: a replica copies a compacted database in\n"
    "                              full instead of rebuilding its prefix\n"
    "  --debug-slot-hash-bits N    tests only: keep N bits of each slot hash so that\n"
    "                              hash collisions are common (files not portable)\n"
    "  --debug-io-fanout-min N     tests only: share a turn's reads and writes out to\n"
    "                              the I/O threads from N clients on (default twice\n"
    "                              --threads)\n"
    "  --debug-io-worker-first 1   tests only: a worker thread takes the first client\n"
    "                              of every shared-out step\n"
    "  --version, --help\n"
    "\n"
    "A non-loopback --bind without a password is refused (protected mode).\n";

const char *const config_param_names[] = {
    "dir", "bind", "port", "requirepass", "durability", "appendfsync", "appendonly", "save",
    "maxclients", "timeout", "auto-compact-percent", "logfile", "loglevel",
    "proto-max-bulk-len", "client-query-buffer-limit", "client-output-buffer-limit",
    "databases", "hz", "active-expire-effort", "maxmemory", "protected-mode", "threads",
    "io-threads", "repl-timeout", "preallocate", NULL};

static const char *level_names[] = {"debug", "verbose", "notice", "warning"};

static int parse_memory(const char *s, long long *out) {
    char *end;
    if (*s < '0' || *s > '9') return 0; /* strtoll would skip spaces and a sign */
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0) return 0;
    long long mul = 1;
    if (!strcasecmp(end, "") || !strcasecmp(end, "b")) mul = 1;
    else if (!strcasecmp(end, "k")) mul = 1000;
    else if (!strcasecmp(end, "kb")) mul = 1024;
    else if (!strcasecmp(end, "m")) mul = 1000 * 1000;
    else if (!strcasecmp(end, "mb")) mul = 1024 * 1024;
    else if (!strcasecmp(end, "g")) mul = 1000LL * 1000 * 1000;
    else if (!strcasecmp(end, "gb")) mul = 1024LL * 1024 * 1024;
    else return 0;
    if (v > LLONG_MAX / mul) return 0;
    *out = v * mul;
    return 1;
}

/* Descriptors kept beside the clients' sockets: the store file, side file and
 * map of 16 databases (a map keeps a descriptor of its file for checking
 * large values), listeners, the log, compaction and spool files. */
#define FDS_BESIDE_CLIENTS 96

/* Raises the open file limit (up to the hard limit) for want clients;
 * returns how many clients it leaves room for, want at most. */
static long long clients_within_fd_limit(long long want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return want;
    rlim_t need = (rlim_t)want + FDS_BESIDE_CLIENTS;
    if (rl.rlim_cur >= need) return want;
    rl.rlim_cur = need < rl.rlim_max ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1;
    if (rl.rlim_cur >= need) return want;
    return rl.rlim_cur > FDS_BESIDE_CLIENTS + 1 ? (long long)(rl.rlim_cur - FDS_BESIDE_CLIENTS) : 1;
}

static int parse_int_range(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    if ((*s < '0' || *s > '9') && *s != '-') return 0; /* no spaces or '+', as Redis */
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static void set_password(const char *p) {
    if (srv.cfg.requirepass) {
        explicit_bzero(srv.cfg.requirepass, strlen(srv.cfg.requirepass));
        free(srv.cfg.requirepass);
    }
    srv.cfg.requirepass = p && *p ? strdup(p) : NULL;
}

/* The first line of the file, whole. An empty first line (an empty file,
 * /dev/null) or a file that cannot be read (a directory) is refused: an
 * operator who names a password file means a password, and taking it for
 * none would leave the server open. */
static int read_password_file(const char *path, char *err, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, cap, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t line_cap = 0;
    errno = 0;
    ssize_t n = getline(&line, &line_cap, f);
    int read_errno = errno;
    fclose(f);
    if (n < 0) {
        snprintf(err, cap, "cannot read a password from %s: %s", path,
                 read_errno ? strerror(read_errno) : "the file is empty");
        free(line);
        return -1;
    }
    line[strcspn(line, "\r\n")] = 0;
    int empty = !line[0];
    if (!empty) set_password(line);
    explicit_bzero(line, line_cap);
    free(line);
    if (empty) {
        snprintf(err, cap, "%s: its first line is empty (no password)", path);
        return -1;
    }
    return 0;
}

/* 1 applied, 0 unknown parameter, -1 bad value (err filled). Values with
 * several words (bind) come space-separated. */
static int is_loopback(const char *addr);

int config_set_param(const char *name, const char *value, char *err, size_t cap) {
    long long v;
    server_config *c = &srv.cfg;
    if (!strcmp(name, "requirepass")) {
        /* The start refuses a non-loopback bind without a password; taking
         * the password away at runtime would open the server all the same. */
        for (int i = 0; srv.cron_ev && !*value && i < c->nbinds; i++) {
            if (!is_loopback(c->binds[i])) {
                snprintf(err, cap, "listening on %s, the password stays (protected mode)",
                         c->binds[i]);
                return -1;
            }
        }
        set_password(value);
    } else if (!strcmp(name, "durability") || !strcmp(name, "appendfsync")) {
        if (!strcasecmp(value, "no")) c->durability = DURABILITY_NO;
        else if (!strcasecmp(value, "everysec")) c->durability = DURABILITY_EVERYSEC;
        else if (!strcasecmp(value, "always")) c->durability = DURABILITY_ALWAYS;
        else goto bad;
        db_apply_append_mode(); /* the open stores too (CONFIG SET) */
    } else if (!strcmp(name, "preallocate")) {
        if (!strcasecmp(value, "yes")) c->preallocate = 1;
        else if (!strcasecmp(value, "no")) c->preallocate = 0;
        else {
            snprintf(err, cap, "argument must be 'yes' or 'no'");
            return -1;
        }
        db_apply_append_mode(); /* the open stores too (CONFIG SET) */
    } else if (!strcmp(name, "maxclients")) {
        if (!parse_int_range(value, 1, 1000000, &v)) goto bad;
        /* At runtime as at startup, the open file limit is raised for the
         * clients; a number it cannot be raised for is refused (as Redis),
         * since the clients past it would find no descriptor. */
        long long room = srv.cron_ev ? clients_within_fd_limit(v) : v;
        if (room < v) {
            snprintf(err, cap, "The operating system is not able to handle the specified "
                     "number of clients, try with %lld", room);
            return -1;
        }
        c->maxclients = (int)v;
    } else if (!strcmp(name, "timeout")) {
        if (!parse_int_range(value, 0, INT_MAX, &v)) goto bad;
        c->timeout = v;
    } else if (!strcmp(name, "auto-compact-percent")) {
        if (!parse_int_range(value, 0, 100, &v)) goto bad;
        c->auto_compact_percent = (int)v;
    } else if (!strcmp(name, "loglevel")) {
        int found = 0;
        for (int i = 0; i < 4; i++)
            if (!strcasecmp(value, level_names[i])) c->loglevel = i, found = 1;
        if (!found) goto bad;
    } else if (!strcmp(name, "logfile")) {
        if (server_log_set_file(value, err, cap)) return -1;
    } else if (!strcmp(name, "proto-max-bulk-len")) {
        if (!parse_memory(value, &v) || v < 1024 * 1024) goto bad;
        c->proto_max_bulk_len = v;
    } else if (!strcmp(name, "client-query-buffer-limit")) {
        if (!parse_memory(value, &v) || v < 1024 * 1024) goto bad;
        c->query_buffer_limit = v;
    } else if (!strcmp(name, "client-output-buffer-limit")) {
        if (!parse_memory(value, &v) || v < 1024 * 1024) goto bad;
        c->output_buffer_limit = v;
    } else if (!strcmp(name, "hz")) {
        if (!parse_int_range(value, 1, 500, &v)) goto bad;
        c->hz = (int)v;
        if (srv.cron_ev) { /* at runtime: the tick's period follows at once */
            struct timeval tick = {0, 1000000 / c->hz};
            event_add(srv.cron_ev, &tick);
        }
    } else if (!strcmp(name, "active-expire-effort")) {
        if (!parse_int_range(value, 1, 1000000, &v)) goto bad;
        c->active_expire_effort = (int)v;
    } else if (!strcmp(name, "threads") || !strcmp(name, "io-threads")) {
        /* the threads start with the server (Redis's io-threads is immutable too) */
        snprintf(err, cap, "can't set immutable config");
        return -1;
    } else {
        return 0;
    }
    return 1;
bad:
    snprintf(err, cap, "argument couldn't be parsed into an integer or is out of range");
    if (!strcmp(name, "durability") || !strcmp(name, "appendfsync") || !strcmp(name, "loglevel"))
        snprintf(err, cap, "argument(s) must be one of the following: %s",
                 !strcmp(name, "loglevel") ? "debug, verbose, notice, warning" : "always, everysec, no");
    return -1;
}

int config_get_param(const char *name, char *buf, size_t cap) {
    server_config *c = &srv.cfg;
    if (!strcmp(name, "dir")) snprintf(buf, cap, "%s", c->dir);
    else if (!strcmp(name, "bind")) {
        size_t off = 0;
        buf[0] = 0;
        for (int i = 0; i < c->nbinds && off < cap; i++)
            off += (size_t)snprintf(buf + off, cap - off, "%s%s", i ? " " : "", c->binds[i]);
    } else if (!strcmp(name, "port")) snprintf(buf, cap, "%d", c->port);
    else if (!strcmp(name, "requirepass")) snprintf(buf, cap, "%s", ""); /* never shown */
    else if (!strcmp(name, "durability") || !strcmp(name, "appendfsync"))
        snprintf(buf, cap, "%s", c->durability == DURABILITY_ALWAYS ? "always"
                                 : c->durability == DURABILITY_EVERYSEC ? "everysec" : "no");
    else if (!strcmp(name, "appendonly")) snprintf(buf, cap, "no");
    else if (!strcmp(name, "preallocate")) snprintf(buf, cap, "%s", c->preallocate ? "yes" : "no");
    else if (!strcmp(name, "save")) snprintf(buf, cap, "%s", "");
    else if (!strcmp(name, "maxclients")) snprintf(buf, cap, "%d", c->maxclients);
    else if (!strcmp(name, "timeout")) snprintf(buf, cap, "%lld", c->timeout);
    else if (!strcmp(name, "auto-compact-percent")) snprintf(buf, cap, "%d", c->auto_compact_percent);
    else if (!strcmp(name, "logfile")) snprintf(buf, cap, "%s", c->logfile);
    else if (!strcmp(name, "loglevel")) snprintf(buf, cap, "%s", level_names[c->loglevel & 3]);
    else if (!strcmp(name, "proto-max-bulk-len")) snprintf(buf, cap, "%lld", c->proto_max_bulk_len);
    else if (!strcmp(name, "client-query-buffer-limit")) snprintf(buf, cap, "%lld", c->query_buffer_limit);
    else if (!strcmp(name, "client-output-buffer-limit")) snprintf(buf, cap, "%lld", c->output_buffer_limit);
    else if (!strcmp(name, "databases")) snprintf(buf, cap, "%d", SERVER_DBS);
    else if (!strcmp(name, "hz")) snprintf(buf, cap, "%d", c->hz);
    else if (!strcmp(name, "active-expire-effort")) snprintf(buf, cap, "%d", c->active_expire_effort);
    else if (!strcmp(name, "maxmemory")) snprintf(buf, cap, "0");
    else if (!strcmp(name, "protected-mode")) snprintf(buf, cap, "yes");
    else if (!strcmp(name, "threads") || !strcmp(name, "io-threads")) snprintf(buf, cap, "%d", c->threads);
    else if (!strcmp(name, "repl-timeout")) snprintf(buf, cap, "%lld", replica_timeout_seconds());
    else return 0;
    return 1;
}

/* Startup-only options and those of CONFIG SET. Returns 1, or -1 with err. */
static int apply_option(const char *name, char **vals, int nvals, char *err, size_t cap) {
    if (nvals < 1) {
        snprintf(err, cap, "option '%s' needs a value", name);
        return -1;
    }
    /* (the command line takes one word per such option; a config file line
     * could give more, which were dropped without a word) */
    if (nvals > 1 && strcmp(name, "bind") && strcmp(name, "replicaof") && strcmp(name, "slaveof")) {
        snprintf(err, cap, "option '%s' takes one value, not %d (quote a value that holds "
                 "spaces)", name, nvals);
        return -1;
    }
    long long v;
    if (!strcmp(name, "dir")) {
        snprintf(srv.cfg.dir, sizeof srv.cfg.dir, "%s", vals[0]);
    } else if (!strcmp(name, "bind")) {
        for (int i = 0; i < srv.cfg.nbinds; i++) free(srv.cfg.binds[i]);
        srv.cfg.nbinds = 0;
        for (int i = 0; i < nvals; i++) {
            char *copy = strdup(vals[i]), *save = NULL;
            for (char *t = copy ? strtok_r(copy, " ", &save) : NULL; t;
                 t = strtok_r(NULL, " ", &save)) {
                if (srv.cfg.nbinds == SERVER_MAX_BINDS) { /* Redis refuses more too */
                    snprintf(err, cap, "too many bind addresses (at most %d)", SERVER_MAX_BINDS);
                    free(copy);
                    return -1;
                }
                srv.cfg.binds[srv.cfg.nbinds++] = strdup(t);
            }
            free(copy);
        }
    } else if (!strcmp(name, "port")) {
        /* not 0: the kernel's pick would be logged and shown as port 0 */
        if (!parse_int_range(vals[0], 1, 65535, &v)) {
            snprintf(err, cap, "invalid port '%s'", vals[0]);
            return -1;
        }
        srv.cfg.port = (int)v;
    } else if (!strcmp(name, "debug-slot-hash-bits")) {
        if (!parse_int_range(vals[0], 1, 64, &v)) {
            snprintf(err, cap, "invalid bit count '%s'", vals[0]);
            return -1;
        }
        slot_hash_mask = v == 64 ? UINT64_MAX : (1ULL << v) - 1;
    } else if (!strcmp(name, "threads") || !strcmp(name, "io-threads")) {
        if (!parse_int_range(vals[0], 1, SERVER_MAX_THREADS, &v)) {
            snprintf(err, cap, "invalid thread count '%s' (1 to %d)", vals[0], SERVER_MAX_THREADS);
            return -1;
        }
        srv.cfg.threads = (int)v;
    } else if (!strcmp(name, "debug-io-fanout-min")) {
        if (!parse_int_range(vals[0], 1, INT_MAX, &v)) {
            snprintf(err, cap, "invalid client count '%s'", vals[0]);
            return -1;
        }
        srv.cfg.io_fanout_min = (int)v;
    } else if (!strcmp(name, "debug-io-worker-first")) {
        if (!parse_int_range(vals[0], 0, 1, &v)) {
            snprintf(err, cap, "invalid value '%s' (0 or 1)", vals[0]);
            return -1;
        }
        srv.cfg.io_worker_first = (int)v;
    } else if (!strcmp(name, "requirepass-file")) {
        if (read_password_file(vals[0], err, cap)) return -1;
    } else if ((v = replica_config_option(name, vals, nvals, err, cap)) != 0) {
        if (v < 0) return -1;
    } else {
        char e[256];
        int rc = config_set_param(name, vals[0], e, sizeof e);
        if (rc == 0) {
            snprintf(err, cap, "unknown option '%s'", name);
            return -1;
        }
        if (rc < 0) {
            snprintf(err, cap, "bad value for '%s': %s", name, e);
            return -1;
        }
    }
    return 1;
}

static int load_config_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "simdr-server: cannot open config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* Lines of any length, read whole: a line cut at a buffer's size would
     * apply a comment's tail as an option, or show a long password's tail in
     * an error. */
    char *line = NULL, *text = NULL;
    size_t line_cap = 0, text_cap = 0;
    ssize_t got;
    int lineno = 0, rc = 0;
    resp_parser words_parser;
    resp_parser_init(&words_parser);
    errno = 0;
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        if (text_cap < (size_t)got + SERVER_MAX_BINDS + 2) {
            char *bigger = realloc(text, (size_t)got + SERVER_MAX_BINDS + 2);
            if (!bigger) {
                fprintf(stderr, "simdr-server: %s:%d: out of memory\n", path, lineno);
                rc = -1;
                break;
            }
            text = bigger;
            text_cap = (size_t)got + SERVER_MAX_BINDS + 2;
        }
        /* Split as Redis splits redis.conf lines: "a b" and 'a b' are one
         * value (the password "two words"), "\t" and "\x41" are escapes. */
        char *words[SERVER_MAX_BINDS + 1];
        char err[512];
        int n = 0, split = resp_split_line(&words_parser, p, strlen(p));
        size_t used = 0;
        if (split == 0) snprintf(err, sizeof err, "unbalanced quotes");
        if (split < 0) snprintf(err, sizeof err, "out of memory");
        if (split == 1 && words_parser.argc > SERVER_MAX_BINDS + 1) {
            snprintf(err, sizeof err, "too many words (at most %d values)", SERVER_MAX_BINDS);
            split = 0;
        }
        for (int i = 0; split == 1 && i < words_parser.argc; i++) {
            size_t len = words_parser.argv[i].len;
            if (memchr(p + words_parser.argv[i].off, 0, len)) {
                snprintf(err, sizeof err, "a value holds a NUL byte");
                split = 0;
                break;
            }
            memcpy(text + used, p + words_parser.argv[i].off, len);
            text[used + len] = 0;
            words[n++] = text + used;
            used += len + 1;
        }
        if (split != 1) {
            fprintf(stderr, "simdr-server: %s:%d: %s\n", path, lineno, err);
            rc = -1;
            break;
        }
        if (n == 0) continue;
        for (char *q = words[0]; *q; q++)
            if (*q >= 'A' && *q <= 'Z') *q = (char)(*q + 32);
        if (apply_option(words[0], words + 1, n - 1, err, sizeof err) < 0) {
            fprintf(stderr, "simdr-server: %s:%d: %s\n", path, lineno, err);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "simdr-server: cannot read config file %s: %s\n", path, strerror(errno));
        rc = -1;
    }
    if (line) explicit_bzero(line, line_cap);
    if (text) explicit_bzero(text, text_cap);
    free(line);
    free(text);
    resp_parser_free(&words_parser);
    fclose(f);
    if (rc == 0) snprintf(srv.config_file, sizeof srv.config_file, "%s", path);
    return rc;
}

static void config_defaults(void) {
    server_config *c = &srv.cfg;
    snprintf(c->dir, sizeof c->dir, ".");
    c->binds[0] = strdup("127.0.0.1");
    c->binds[1] = strdup("-::1");
    c->nbinds = 2;
    c->port = 6379;
    c->durability = DURABILITY_EVERYSEC;
    c->preallocate = 1;
    c->maxclients = 10000;
    c->auto_compact_percent = 50;
    c->loglevel = LOG_NOTICE_;
    c->proto_max_bulk_len = 512LL * 1024 * 1024;
    c->query_buffer_limit = 1024LL * 1024 * 1024;
    c->output_buffer_limit = 1024LL * 1024 * 1024;
    c->hz = 10;
    c->active_expire_effort = 1000;
    c->threads = 1;
}

static int parse_args(int argc, char **argv) {
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (load_config_file(argv[1])) return -1;
        i = 2;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(help_text, stdout);
            exit(0);
        }
        if (!strcmp(a, "--version") || !strcmp(a, "-v")) {
            printf("simdr-server %s (libsimdr %s, Redis protocol %s)\n", SIMDR_VERSION_STRING,
                   simdr_version(), SERVER_REDIS_COMPAT);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "simdr-server: unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        char name[128];
        snprintf(name, sizeof name, "%s", a + 2);
        int first = i + 1, n = 0;
        while (first + n < argc && strncmp(argv[first + n], "--", 2) != 0) n++;
        int most = !strcmp(name, "replicaof") || !strcmp(name, "slaveof") ? 2 : 1;
        if (strcmp(name, "bind") != 0 && n > most) n = most;
        char err[512];
        if (apply_option(name, argv + first, n, err, sizeof err) < 0) {
            fprintf(stderr, "simdr-server: %s (see --help)\n", err);
            return -1;
        }
        i += n;
    }
    return 0;
}

static int is_loopback(const char *addr) {
    if (addr[0] == '-') addr++;
    return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strcmp(addr, "localhost");
}

/* ---- persistence helpers used by commands ---- */

/* Held by every sync, so that an everysec sync on the cron can skip its
 * turn (trylock) while another sync is still in flight. A compaction does
 * not take it: the engine holds a store's sync lock only for the last moment
 * of a compaction (its final catch-up and the switch to the new file). */
static pthread_mutex_t maint_lock = PTHREAD_MUTEX_INITIALIZER;

int server_sync_all(void) { return server_sync(1); }

/* wait = 0: skip (the stores stay dirty) while another sync runs. */
int server_sync(int wait) {
    int first_err = ks_flush_pending();
    if (wait)
        pthread_mutex_lock(&maint_lock);
    else if (pthread_mutex_trylock(&maint_lock) != 0)
        return 0;
    for (int i = 0; i < SERVER_DBS; i++) {
        server_db *d = &srv.db[i];
        if (!d->store || !d->dirty) continue;
        int rc = simdr_sync(d->store);
        if (rc) {
            /* A failed sync fails the store: the cron reopens it. A sync
             * that succeeds says nothing of the next write. */
            ks_note_write(d, rc);
            d->failed = 1;
            server_log(LOG_WARNING_, "sync of %s failed: %s", d->path, simdr_last_error());
            if (!first_err) first_err = rc;
        } else {
            d->dirty = 0;
        }
    }
    pthread_mutex_unlock(&maint_lock);
    srv.last_sync_ms = now_ms();
    if (!first_err) srv.last_save_s = srv.last_sync_ms / 1000;
    return first_err;
}

static pthread_t compact_thread;
static atomic_int compact_done;
static simdr_store *compact_stores[SERVER_DBS];
static int compact_n;

/* Set by the event loop to end a compaction early (server_stop_compaction);
 * the engine asks between steps of its copy. */
static atomic_int compact_stop;
/* Set by the compaction thread when it stopped early, read after the join. */
static int compact_stopped;

static int compaction_should_stop(void *ctx) {
    (void)ctx;
    return atomic_load_explicit(&compact_stop, memory_order_acquire);
}

static void *compact_main(void *arg) {
    (void)arg;
    compact_stopped = 0;
    for (int i = 0; i < compact_n; i++) {
        int rc = compaction_should_stop(NULL)
                     ? SIMDR_ESTOPPED
                     : simdr_compact_stoppable(compact_stores[i], compaction_should_stop, NULL);
        if (rc == SIMDR_ESTOPPED) {
            server_log(LOG_NOTICE_, "compaction stopped; the stores not compacted yet stay "
                                    "on their old files");
            compact_stopped = 1;
            break;
        }
        if (rc) server_log(LOG_WARNING_, "compaction failed: %s", simdr_strerror(rc));
    }
    atomic_store(&compact_done, 1);
    return NULL;
}

int server_start_compaction(void) {
    if (srv.compacting) return 0;
    compact_n = 0;
    /* Every open store: measuring which ones hold garbage would read and
     * sort all their records here, on the event loop (BGREWRITEAOF, like
     * Redis's, always rewrites). */
    for (int i = 0; i < SERVER_DBS; i++)
        if (srv.db[i].store && simdr_file_size(srv.db[i].store) > 0)
            compact_stores[compact_n++] = srv.db[i].store;
    atomic_store(&compact_done, 0);
    /* The replicas get what the stores hold now before a compaction lists
     * it: one that has the old file up to there follows the compaction by
     * rebuilding its prefix instead of copying the compacted file. */
    replica_feed_now();
    if (pthread_create(&compact_thread, NULL, compact_main, NULL) != 0) return -1;
    srv.compacting = 1;
    return 0;
}

void server_stop_compaction(const char *why) {
    if (!srv.compacting) return;
    /* Waiting for the copy would hold the event loop for as long as it
     * takes (seconds for a large store); stopped, a compaction leaves its
     * store as it was, within a few thousand entries of copying. */
    server_log(LOG_NOTICE_, "stopping the running compaction: %s", why);
    atomic_store_explicit(&compact_stop, 1, memory_order_release);
    server_wait_compaction();
    atomic_store_explicit(&compact_stop, 0, memory_order_release);
}

void server_wait_compaction(void) {
    if (!srv.compacting) return;
    pthread_join(compact_thread, NULL);
    srv.compacting = 0;
    srv.compactions++;
    /* Writes during the compaction may have grown a file back past the
     * size its garbage was last measured at: measure again at the next
     * check, whatever the size (maybe_auto_compact). */
    for (int i = 0; i < SERVER_DBS; i++) srv.db[i].size_at_garbage_check = 0;
    /* srv.compactions counts the ends of runs, stopped ones too: a stopped
     * run may have replaced some stores' files, which WATCH must know
     * (compaction_epoch). */
    if (!compact_stopped) server_log(LOG_NOTICE_, "compaction finished");
}

/* ---- the stores' garbage, measured off the event loop ----
 * simdr_compaction_savings sorts and reads every live record (tens of
 * milliseconds a million keys), so it runs on a thread of its own; INFO
 * and the auto-compaction check use the last measure (server_db.garbage).
 * A store is measured again once its file grew by a twentieth (garbage is
 * made by appends) or shrank (compacted, replaced) since its last measure. */
static pthread_t measure_thread;
static int measuring;                         /* event loop only */
static atomic_int measure_done;
static simdr_store *measure_stores[SERVER_DBS]; /* NULL: not measured this round */
static uint64_t measure_sizes[SERVER_DBS];      /* file sizes when the round started */
static uint64_t measure_results[SERVER_DBS];    /* written by the thread before measure_done */

static void *measure_main(void *arg) {
    (void)arg;
    for (int i = 0; i < SERVER_DBS; i++)
        if (measure_stores[i]) measure_results[i] = simdr_compaction_savings(measure_stores[i]);
    atomic_store_explicit(&measure_done, 1, memory_order_release);
    return NULL;
}

void server_wait_measure(void) {
    if (!measuring) return;
    pthread_join(measure_thread, NULL);
    measuring = 0;
    for (int i = 0; i < SERVER_DBS; i++) {
        if (!measure_stores[i]) continue;
        srv.db[i].garbage = measure_results[i];
        srv.db[i].size_at_garbage_check = measure_sizes[i];
        measure_stores[i] = NULL;
    }
}

/* Starts a measure of the stores whose files changed enough; 1 if one runs. */
static int start_measure(void) {
    int any = 0;
    for (int i = 0; i < SERVER_DBS; i++) {
        simdr_store *s = srv.db[i].store;
        measure_stores[i] = NULL;
        if (!s) continue;
        uint64_t size = simdr_file_size(s), last = srv.db[i].size_at_garbage_check;
        if (last && size >= last && size < last + last / 20) continue;
        if (size == 0) {
            srv.db[i].garbage = 0;
            continue;
        }
        measure_stores[i] = s;
        measure_sizes[i] = size;
        any = 1;
    }
    if (!any) return 0;
    atomic_store(&measure_done, 0);
    if (pthread_create(&measure_thread, NULL, measure_main, NULL) != 0) {
        for (int i = 0; i < SERVER_DBS; i++) measure_stores[i] = NULL;
        return 0;
    }
    measuring = 1;
    return 1;
}

/* allow_compact = 0 (a replica, whose files change only by its primary's
 * bytes): measure only. */
static void maybe_auto_compact(int allow_compact) {
    if (srv.compacting) {
        if (atomic_load(&compact_done)) server_wait_compaction();
        return;
    }
    if (measuring) {
        if (!atomic_load_explicit(&measure_done, memory_order_acquire)) return;
        server_wait_measure();
        if (allow_compact && srv.cfg.auto_compact_percent > 0)
            for (int i = 0; i < SERVER_DBS; i++) {
                server_db *d = &srv.db[i];
                uint64_t size = d->size_at_garbage_check;
                if (!d->store || size < 1024 * 1024 ||
                    d->garbage * 100 < size * (uint64_t)srv.cfg.auto_compact_percent)
                    continue;
                server_log(LOG_NOTICE_, "starting compaction (%s: %llu of %llu bytes garbage)",
                           d->path, (unsigned long long)d->garbage, (unsigned long long)size);
                server_start_compaction();
                return;
            }
    }
    start_measure();
}

/* An index growth reads every indexed entry's metadata through the map,
 * which leaves the whole file mapped into the process: after a bulk load
 * its resident size would be the file's, when only the index is meant to
 * stay in memory. The tick after a growth unmaps the pages again (they stay
 * in the page cache; reads map back what they touch). */
static void release_grown_maps(void) {
    for (int i = 0; i < SERVER_DBS; i++) {
        server_db *d = &srv.db[i];
        if (!d->store) continue;
        uint64_t bytes = simdr_index_bytes(d->store);
        if (bytes == d->index_bytes_seen) continue;
        d->index_bytes_seen = bytes;
        simdr_release_memory(d->store);
    }
}

static void on_cron(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    long long now = now_ms();
    ks_flush_pending(); /* the tick reads the engine (expiry walk, sizes) */
    net_check_timeouts(now);
    replica_cron(now);
    /* A replica's files change only by the primary's bytes (replica.c). */
    if (!replica_is_replica()) ks_active_expire(now, srv.cfg.active_expire_effort);
    if (srv.cfg.durability == DURABILITY_EVERYSEC && now - srv.last_sync_ms >= 1000)
        server_sync(0);
    ks_reopen_failed();
    release_grown_maps();
    static long long last_compact_check;
    if (now - last_compact_check >= 1000) {
        last_compact_check = now;
        maybe_auto_compact(!replica_is_replica());
    }
}

void server_request_shutdown(void) {
    srv.shutting_down = 1;
    event_base_loopbreak(srv.base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what, (void)arg;
    server_log(LOG_WARNING_, "Received %s, scheduling shutdown...", sig == SIGINT ? "SIGINT" : "SIGTERM");
    server_request_shutdown();
}

/* One server per data directory. A store file is locked only while it is
 * open, and a database without a file has none, so two servers started on
 * one directory could each create and own some of its databases, and one's
 * FLUSHDB remove a file the other had written. The directory itself is
 * locked instead (flock on its descriptor, released when the process ends,
 * however it ends). */
static int lock_data_dir(void) {
    int fd = open(srv.cfg.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        server_log(LOG_WARNING_, "cannot use %s as the data directory: %s", srv.cfg.dir,
                   strerror(errno));
        return -1;
    }
    if (access(srv.cfg.dir, W_OK | X_OK) != 0) {
        server_log(LOG_WARNING_, "cannot write in the data directory %s: %s", srv.cfg.dir,
                   strerror(errno));
        close(fd);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            server_log(LOG_WARNING_, "the data directory %s is in use by another simdr-server",
                       srv.cfg.dir);
            close(fd);
            return -1;
        }
        /* a file system without flock: the stores' own locks still hold */
        server_log(LOG_NOTICE_, "cannot lock the data directory %s (%s): going on",
                   srv.cfg.dir, strerror(errno));
    }
    srv.dir_lock_fd = fd;
    return 0;
}

static int open_databases(void) {
    if (mkdir(srv.cfg.dir, 0700) != 0 && errno != EEXIST) {
        server_log(LOG_WARNING_, "cannot create directory %s: %s", srv.cfg.dir, strerror(errno));
        return -1;
    }
    if (lock_data_dir() != 0) return -1;
    for (int i = 0; i < SERVER_DBS; i++) {
        server_db *d = &srv.db[i];
        d->index = i;
        snprintf(d->path, sizeof d->path, "%s/db-%d.simdr", srv.cfg.dir, i);
        long long t0 = now_us();
        int rc = db_open_existing(d);
        if (rc) {
            server_log(LOG_WARNING_, "cannot open %s: %s (%s)", d->path, simdr_strerror(rc),
                       simdr_last_error());
            return -1;
        }
        if (d->store) {
            simdr_recovery_info ri;
            int cut = simdr_recovery(d->store, &ri) == 0 && ri.bytes_cut;
            if (cut && ri.zeros_only)
                /* The zeros written ahead of the tail (--preallocate) by the last run:
                 * no entry, nothing lost, nothing to save. */
                server_log(LOG_NOTICE_, "%s: cut %llu bytes of zeros after the last entry "
                           "(space written ahead of the tail)", d->path,
                           (unsigned long long)ri.bytes_cut);
            else if (cut)
                server_log(LOG_WARNING_, "%s: cut a torn tail of %llu bytes (%s%s)", d->path,
                           (unsigned long long)ri.bytes_cut,
                           ri.saved_path[0] ? "saved to " : "not saved",
                           ri.saved_path);
            server_log(LOG_NOTICE_, "db %d: %llu keys from %s, opened in %.1f ms", i,
                       (unsigned long long)simdr_count(d->store), d->path, (now_us() - t0) / 1000.0);
        }
    }
    return 0;
}

static void raise_fd_limit(void) {
    long long room = clients_within_fd_limit(srv.cfg.maxclients);
    if (room < srv.cfg.maxclients) {
        /* a tiny limit still serves a few clients; past it they are refused */
        srv.cfg.maxclients = room > 32 ? (int)room : 32;
        server_log(LOG_WARNING_, "maxclients lowered to %d (open file limit)", srv.cfg.maxclients);
    }
}

int main(int argc, char **argv) {
    config_defaults();
    if (parse_args(argc, argv)) return 1;
    if (!srv.cfg.requirepass) {
        for (int i = 0; i < srv.cfg.nbinds; i++) {
            if (!is_loopback(srv.cfg.binds[i])) {
                fprintf(stderr,
                        "simdr-server: refusing to listen on %s without a password (protected "
                        "mode): set --requirepass or --requirepass-file, or bind loopback only\n",
                        srv.cfg.binds[i]);
                return 1;
            }
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* as Redis: a closed terminal does not stop the server */
    /* Under a file size limit (ulimit -f) a write past it fails with EFBIG
     * and is answered as a full disk; by default the signal would kill the
     * server (the engine keeps its own writes under the limit, but a large
     * value's spool file is written here). */
    signal(SIGXFSZ, SIG_IGN);
    srv.start_ms = now_ms();
    srv.last_sync_ms = srv.start_ms;
    srv.last_save_s = srv.start_ms / 1000;
    raise_fd_limit();
    srv.base = event_base_new();
    if (!srv.base) {
        fprintf(stderr, "simdr-server: cannot create the event loop\n");
        return 1;
    }
    if (open_databases()) return 1;
    if (net_listen_all()) {
        for (int i = 0; i < SERVER_DBS; i++) db_close(&srv.db[i]);
        return 1;
    }
    /* As Redis: with fewer clients than two per thread in a turn, waking the
     * threads costs more than it saves, so the loop thread does it alone. */
    if (!srv.cfg.io_fanout_min) srv.cfg.io_fanout_min = 2 * srv.cfg.threads;
    if (iothreads_start(srv.cfg.threads)) {
        server_log(LOG_WARNING_, "cannot start %d I/O threads", srv.cfg.threads);
        net_close_listeners();
        for (int i = 0; i < SERVER_DBS; i++) db_close(&srv.db[i]);
        return 1;
    }
    replica_start();
    srv.sigterm_ev = evsignal_new(srv.base, SIGTERM, on_signal, NULL);
    srv.sigint_ev = evsignal_new(srv.base, SIGINT, on_signal, NULL);
    event_add(srv.sigterm_ev, NULL);
    event_add(srv.sigint_ev, NULL);
    srv.cron_ev = event_new(srv.base, -1, EV_PERSIST, on_cron, NULL);
    struct timeval tick = {0, 1000000 / srv.cfg.hz};
    event_add(srv.cron_ev, &tick);
    server_log(LOG_NOTICE_, "simdr-server %s ready on port %d (dir %s, durability %s, threads %d)",
               SIMDR_VERSION_STRING, srv.cfg.port, srv.cfg.dir,
               srv.cfg.durability == DURABILITY_ALWAYS ? "always"
               : srv.cfg.durability == DURABILITY_EVERYSEC ? "everysec" : "no",
               srv.cfg.threads);

    while (!srv.shutting_down) {
        if (event_base_loop(srv.base, EVLOOP_ONCE) < 0) break;
        /* --threads > 1: the readable clients were only listed; read them
         * (on the I/O threads) and run their commands. */
        net_process_reads();
        net_gather_group_commit();
        /* The turn's batch is appended by net_after_turn: feed replicas after it, so
         * a write reaches them in the turn that made it. */
        int wrote = srv.any_write_this_turn;
        net_after_turn();
        replica_after_turn(wrote);
    }

    /* Shutdown: a running compaction stopped first (it would otherwise go on
     * copying while the replies go out and the stores sync, and replace a
     * file the shutdown is about to close); no new connections; what was
     * read has run; replies out; sync; close. */
    server_stop_compaction("shutting down");
    net_close_listeners();
    net_after_turn();
    net_flush_all_blocking(2000);
    /* A last sync that fails leaves writes the disk has not confirmed (a
     * killed process keeps them, a power cut may not): said in the log and
     * in the exit status, so that a supervisor sees it. */
    int last_sync = server_sync_all();
    server_wait_measure();
    iothreads_stop();
    replica_shutdown();
    while (srv.clients) client_free(srv.clients);
    for (int i = 0; i < SERVER_DBS; i++) db_close(&srv.db[i]);
    net_gather_free();
    event_free(srv.cron_ev);
    event_free(srv.sigterm_ev);
    event_free(srv.sigint_ev);
    event_base_free(srv.base);
    for (int i = 0; i < srv.cfg.nbinds; i++) free(srv.cfg.binds[i]);
    set_password(NULL);
    if (last_sync) {
        server_log(LOG_WARNING_, "the last sync failed (%s): writes since the last successful "
                   "sync may not survive a power cut; exiting with status 1",
                   simdr_strerror(last_sync));
        return 1;
    }
    server_log(LOG_NOTICE_, "simdr-server is now ready to exit, bye bye...");
    return 0;
}
