/*
 * commands_server.c - connection and server commands of simdr-server: PING,
 * ECHO, AUTH, HELLO, QUIT, RESET, SELECT, FLUSHDB, FLUSHALL, SWAPDB, INFO,
 * CONFIG, CLIENT, SAVE, BGSAVE, LASTSAVE, BGREWRITEAOF (compaction), TIME,
 * DEBUG SLEEP, WAIT and SHUTDOWN. Replies and error texts follow Redis 7.0.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "server.h"

#define ERR_NOT_INT "ERR value is not an integer or out of range"

void cmd_ping(client *c, int argc, char **argv, size_t *lens) {
    if (argc > 2) {
        reply_error(c, "ERR wrong number of arguments for 'ping' command");
        return;
    }
    if (argc == 1)
        reply_simple(c, "PONG");
    else
        reply_bulk(c, argv[1], lens[1]);
}

void cmd_echo(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    reply_bulk(c, argv[1], lens[1]);
}

static int password_ok(const char *user, size_t ulen, const char *pass, size_t plen) {
    if (!eq_nocase(user, ulen, "default") || strncmp(user, "default", ulen) != 0) return 0;
    if (!srv.cfg.requirepass) return 1;
    return secret_equal(srv.cfg.requirepass, strlen(srv.cfg.requirepass), pass, plen);
}

void cmd_auth(client *c, int argc, char **argv, size_t *lens) {
    if (argc > 3) {
        reply_error(c, "ERR syntax error");
        return;
    }
    const char *user = "default", *pass = argv[1];
    size_t ulen = 7, plen = lens[1];
    if (argc == 2) {
        if (!srv.cfg.requirepass) {
            reply_error(c, "ERR AUTH <password> called without any password configured for the "
                           "default user. Are you sure your configuration is correct?");
            return;
        }
    } else {
        user = argv[1];
        ulen = lens[1];
        pass = argv[2];
        plen = lens[2];
    }
    if (password_ok(user, ulen, pass, plen)) {
        c->authenticated = 1;
        reply_ok(c);
    } else {
        server_log(LOG_VERBOSE_, "failed AUTH from %s", c->addr);
        reply_error(c, "WRONGPASS invalid username-password pair or user is disabled.");
    }
}

static int set_client_name(client *c, const char *name, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (name[i] < '!' || name[i] > '~') {
            reply_error(c, "ERR Client names cannot contain spaces, newlines or special characters.");
            return -1;
        }
    }
    free(c->name);
    c->name = NULL;
    if (len) {
        c->name = malloc(len + 1);
        if (c->name) {
            memcpy(c->name, name, len);
            c->name[len] = 0;
        }
    }
    return 0;
}

void cmd_hello(client *c, int argc, char **argv, size_t *lens) {
    long long ver = 0;
    int next = 1;
    if (argc >= 2) {
        next = 2;
        if (!parse_ll(argv[1], lens[1], &ver)) {
            reply_error(c, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver < 2 || ver > 3) {
            reply_error(c, "NOPROTO unsupported protocol version");
            return;
        }
    }
    /* As Redis 7.0: the options act in the order given, so an AUTH before a
     * bad option has authenticated the connection, one after it has not, and
     * a SETNAME has named it even when a later option fails. */
    for (int j = next; j < argc; j++) {
        int more = argc - 1 - j;
        if (eq_nocase(argv[j], lens[j], "auth") && more >= 2) {
            if (!password_ok(argv[j + 1], lens[j + 1], argv[j + 2], lens[j + 2])) {
                reply_error(c, "WRONGPASS invalid username-password pair or user is disabled.");
                return;
            }
            c->authenticated = 1;
            j += 2;
        } else if (eq_nocase(argv[j], lens[j], "setname") && more) {
            if (set_client_name(c, argv[j + 1], lens[j + 1])) return;
            j++;
        } else {
            reply_error(c, "ERR Syntax error in HELLO option '%.*s'", (int)lens[j], argv[j]);
            return;
        }
    }
    if (!c->authenticated) {
        reply_error(c, "NOAUTH HELLO must be called with the client already authenticated, "
                       "otherwise the HELLO AUTH <user> <pass> option can be used to "
                       "authenticate the client and select the RESP protocol version at the "
                       "same time");
        return;
    }
    if (ver) c->resp = (int)ver;
    reply_map(c, 7);
    reply_cstr(c, "server");
    reply_cstr(c, "simdr");
    reply_cstr(c, "version");
    reply_cstr(c, SERVER_REDIS_COMPAT);
    reply_cstr(c, "proto");
    reply_int(c, c->resp);
    reply_cstr(c, "id");
    reply_int(c, (long long)c->id);
    reply_cstr(c, "mode");
    reply_cstr(c, "standalone");
    reply_cstr(c, "role");
    reply_cstr(c, "master");
    reply_cstr(c, "modules");
    reply_empty_array(c);
}

void cmd_quit(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    reply_ok(c);
    c->flags |= CLIENT_CLOSE_AFTER_REPLY;
}

void cmd_reset(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    client_discard_multi(c);
    client_unwatch(c);
    c->db = 0;
    c->resp = 2;
    free(c->name);
    c->name = NULL;
    c->authenticated = srv.cfg.requirepass == NULL;
    reply_simple(c, "RESET");
}

void cmd_select(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    int db;
    if (cmd_parse_db(c, argv[1], lens[1], &db)) return;
    c->db = db;
    reply_ok(c);
}

static int flush_mode_ok(client *c, int argc, char **argv, size_t *lens) {
    if (argc > 2 || (argc == 2 && !eq_nocase(argv[1], lens[1], "sync") &&
                     !eq_nocase(argv[1], lens[1], "async"))) {
        reply_error(c, "ERR syntax error");
        return 0;
    }
    return 1;
}

void cmd_flushdb(client *c, int argc, char **argv, size_t *lens) {
    if (!flush_mode_ok(c, argc, argv, lens)) return;
    int rc = db_flush(client_db(c));
    if (rc)
        reply_error(c, "%s", store_error(rc));
    else
        reply_ok(c);
}

void cmd_flushall(client *c, int argc, char **argv, size_t *lens) {
    if (!flush_mode_ok(c, argc, argv, lens)) return;
    int rc = 0;
    for (int i = 0; i < SERVER_DBS && !rc; i++) rc = db_flush(&srv.db[i]);
    if (rc)
        reply_error(c, "%s", store_error(rc));
    else
        reply_ok(c);
}

void cmd_swapdb(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    long long a, b;
    if (!parse_ll(argv[1], lens[1], &a) || a < -2147483648LL || a > 2147483647LL) {
        reply_error(c, "ERR invalid first DB index");
        return;
    }
    if (!parse_ll(argv[2], lens[2], &b) || b < -2147483648LL || b > 2147483647LL) {
        reply_error(c, "ERR invalid second DB index");
        return;
    }
    if (a < 0 || a >= SERVER_DBS || b < 0 || b >= SERVER_DBS) {
        reply_error(c, "ERR DB index is out of range");
        return;
    }
    if (a != b) {
        int rc = db_swap(&srv.db[a], &srv.db[b]);
        if (rc) {
            reply_error(c, "%s", store_error(rc));
            return;
        }
    }
    reply_ok(c);
}

static const char *durability_name(int d) {
    return d == DURABILITY_ALWAYS ? "always" : d == DURABILITY_EVERYSEC ? "everysec" : "no";
}

static int want_section(int argc, char **argv, size_t *lens, const char *name, int is_default) {
    if (argc < 2) return is_default;
    for (int i = 1; i < argc; i++) {
        if (eq_nocase(argv[i], lens[i], name) || eq_nocase(argv[i], lens[i], "all") ||
            eq_nocase(argv[i], lens[i], "everything"))
            return 1;
        if (is_default && eq_nocase(argv[i], lens[i], "default")) return 1;
    }
    return 0;
}

void cmd_info(client *c, int argc, char **argv, size_t *lens) {
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        reply_error(c, "ERR out of memory");
        return;
    }
    long long now = now_ms();
    int first = 1;
#define SECTION(n) evbuffer_add_printf(b, "%s# %s\r\n", first ? "" : "\r\n", n), first = 0
    if (want_section(argc, argv, lens, "server", 1)) {
        struct utsname u;
        uname(&u);
        SECTION("Server");
        evbuffer_add_printf(b,
                            "redis_version:%s\r\nsimdr_server_version:%s\r\nsimdr_library_version:%s\r\n"
                            "redis_mode:standalone\r\nos:%s %s %s\r\narch_bits:%d\r\n"
                            "multiplexing_api:%s\r\nprocess_id:%d\r\ntcp_port:%d\r\n"
                            "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\nhz:%d\r\n"
                            "executable:simdr-server\r\nconfig_file:%s\r\n",
                            SERVER_REDIS_COMPAT, SIMDR_VERSION_STRING, simdr_version(), u.sysname,
                            u.release, u.machine, (int)(sizeof(void *) * 8),
                            event_base_get_method(srv.base), (int)getpid(), srv.cfg.port,
                            (now - srv.start_ms) / 1000, (now - srv.start_ms) / 86400000,
                            srv.cfg.hz, srv.config_file);
    }
    if (want_section(argc, argv, lens, "clients", 1)) {
        SECTION("Clients");
        evbuffer_add_printf(b, "connected_clients:%d\r\nmaxclients:%d\r\nblocked_clients:%d\r\n",
                            srv.nclients, srv.cfg.maxclients, replica_blocked_clients());
    }
    if (want_section(argc, argv, lens, "memory", 1)) {
        /* used_memory is the process's own memory (RssAnon); used_memory_rss
         * adds the store pages mapped in (clean page cache, reclaimable). */
        long long anon_kb = 0, rss_kb = 0, peak_kb = 0;
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f)) {
            sscanf(line, "RssAnon: %lld", &anon_kb);
            sscanf(line, "VmRSS: %lld", &rss_kb);
            sscanf(line, "VmHWM: %lld", &peak_kb);
        }
        if (f) fclose(f);
        uint64_t index = 0;
        for (int i = 0; i < SERVER_DBS; i++)
            if (srv.db[i].store) index += simdr_index_bytes(srv.db[i].store);
        SECTION("Memory");
        evbuffer_add_printf(b, "used_memory:%lld\r\nused_memory_human:%.2fM\r\n"
                               "used_memory_rss:%lld\r\nused_memory_peak:%lld\r\n"
                               "simdr_index_bytes:%llu\r\nmaxmemory:0\r\n",
                            anon_kb * 1024, anon_kb / 1024.0, rss_kb * 1024, peak_kb * 1024,
                            (unsigned long long)index);
    }
    if (want_section(argc, argv, lens, "persistence", 1)) {
        uint64_t fsize = 0, savings = 0;
        for (int i = 0; i < SERVER_DBS; i++)
            if (srv.db[i].store) {
                fsize += simdr_file_size(srv.db[i].store);
                savings += srv.db[i].garbage; /* as last measured (main.c) */
            }
        SECTION("Persistence");
        evbuffer_add_printf(b,
                            "loading:0\r\nrdb_last_save_time:%lld\r\naof_enabled:0\r\n"
                            "aof_rewrite_in_progress:%d\r\nsimdr_durability:%s\r\n"
                            "simdr_file_bytes:%llu\r\nsimdr_compaction_savings:%llu\r\n"
                            "simdr_compactions:%llu\r\nsimdr_group_commits:%llu\r\n"
                            "simdr_group_commit_clients:%llu\r\n"
                            "simdr_group_commit_waits:%llu\r\n"
                            "simdr_last_write_status:%s\r\nsimdr_write_errors:%llu\r\n",
                            srv.last_save_s, srv.compacting, durability_name(srv.cfg.durability),
                            (unsigned long long)fsize, (unsigned long long)savings,
                            (unsigned long long)srv.compactions,
                            (unsigned long long)srv.group_commits,
                            (unsigned long long)srv.group_commit_clients,
                            (unsigned long long)srv.group_commit_waits,
                            srv.write_error ? "err" : "ok",
                            (unsigned long long)srv.write_errors);
    }
    if (want_section(argc, argv, lens, "stats", 1)) {
        SECTION("Stats");
        evbuffer_add_printf(b,
                            "total_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
                            "total_net_input_bytes:%llu\r\ntotal_net_output_bytes:%llu\r\n"
                            "rejected_connections:%llu\r\nexpired_keys:%llu\r\nevicted_keys:0\r\n"
                            "keyspace_hits:%llu\r\nkeyspace_misses:%llu\r\n",
                            (unsigned long long)srv.total_connections,
                            (unsigned long long)srv.total_commands,
                            (unsigned long long)srv.net_in, (unsigned long long)srv.net_out,
                            (unsigned long long)srv.rejected_connections,
                            (unsigned long long)srv.expired_keys,
                            (unsigned long long)srv.keyspace_hits,
                            (unsigned long long)srv.keyspace_misses);
        evbuffer_add_printf(b, "simdr_batch_appends:%llu\r\nsimdr_batched_records:%llu\r\n",
                            (unsigned long long)srv.batch_appends,
                            (unsigned long long)srv.batched_records);
        /* Redis's names: client reads and writes shared out to the I/O threads. */
        evbuffer_add_printf(b, "simdr_threads:%d\r\nio_threaded_reads_processed:%llu\r\n"
                               "io_threaded_writes_processed:%llu\r\nsimdr_io_worker_steps:%llu\r\n"
                               "simdr_io_worker_reads:%llu\r\nsimdr_io_worker_writes:%llu\r\n",
                            srv.cfg.threads, (unsigned long long)srv.threaded_reads,
                            (unsigned long long)srv.threaded_writes,
                            (unsigned long long)(srv.worker_reads + srv.worker_writes),
                            (unsigned long long)srv.worker_reads,
                            (unsigned long long)srv.worker_writes);
    }
    if (want_section(argc, argv, lens, "replication", 1)) {
        SECTION("Replication");
        replica_info(b);
    }
    if (want_section(argc, argv, lens, "cluster", 1)) {
        SECTION("Cluster");
        cluster_info(b);
    }
    if (want_section(argc, argv, lens, "keyspace", 1)) {
        SECTION("Keyspace");
        for (int i = 0; i < SERVER_DBS; i++) {
            uint64_t n = db_size(&srv.db[i]);
            /* Redis's three fields: clients (redis-py among them) parse the
             * line as key=value pairs only when it has more than one. */
            if (n)
                evbuffer_add_printf(b, "db%d:keys=%llu,expires=%llu,avg_ttl=0\r\n", i,
                                    (unsigned long long)n,
                                    (unsigned long long)srv.db[i].ttl_keys);
        }
    }
#undef SECTION
    size_t len = evbuffer_get_length(b);
    char *text = malloc(len + 1);
    if (text) {
        evbuffer_remove(b, text, len);
        reply_verbatim(c, text, len);
        free(text);
    } else {
        reply_error(c, "ERR out of memory");
    }
    evbuffer_free(b);
}

void cmd_config_get(client *c, int argc, char **argv, size_t *lens) {
    struct evbuffer *tmp = evbuffer_new();
    long long n = 0;
    char value[4200];
    for (int k = 0; config_param_names[k]; k++) {
        const char *name = config_param_names[k];
        int hit = 0;
        for (int i = 2; i < argc && !hit; i++)
            hit = glob_match(argv[i], lens[i], name, strlen(name), 1);
        if (!hit || !config_get_param(name, value, sizeof value)) continue;
        evbuffer_add_printf(tmp, "$%zu\r\n%s\r\n$%zu\r\n%s\r\n", strlen(name), name,
                            strlen(value), value);
        n++;
    }
    reply_map(c, n);
    evbuffer_add_buffer(c->out, tmp);
    evbuffer_free(tmp);
}

/* The option an alias names: a duplicate is found through either name. */
static const char *config_canonical(const char *name) {
    if (!strcmp(name, "appendfsync")) return "durability";
    if (!strcmp(name, "io-threads")) return "threads";
    return name;
}

/* Puts the options back as they were before a CONFIG SET that failed midway
 * (Redis applies all of its pairs or none). The password is a pointer the
 * later pairs may have freed: it is set again from its saved text. */
static void config_restore(const server_config *saved, const char *saved_pass) {
    char err[256], hz[16];
    char *pass_now = srv.cfg.requirepass;
    server_config restored = *saved;
    /* the log file's name is set under the log's lock (other threads log) */
    memcpy(restored.logfile, srv.cfg.logfile, sizeof restored.logfile);
    srv.cfg = restored;
    srv.cfg.requirepass = pass_now;
    server_log_set_file(saved->logfile, err, sizeof err);
    config_set_param("requirepass", saved_pass ? saved_pass : "", err, sizeof err);
    snprintf(hz, sizeof hz, "%d", saved->hz);
    config_set_param("hz", hz, err, sizeof err); /* re-arms the tick at the old period */
    db_apply_append_mode(); /* the open stores' append mode follows durability/preallocate */
}

void cmd_config_set(client *c, int argc, char **argv, size_t *lens) {
    if ((argc - 2) % 2 != 0) {
        reply_error(c, "ERR wrong number of arguments for 'config|set' command");
        return;
    }
    server_config saved = srv.cfg;
    char *saved_pass = srv.cfg.requirepass ? strdup(srv.cfg.requirepass) : NULL;
    if (srv.cfg.requirepass && !saved_pass) {
        reply_error(c, "ERR out of memory");
        return;
    }
    int failed = 0;
    for (int i = 2; i < argc && !failed; i += 2) {
        char name[128], err[256];
        failed = 1;
        if (lens[i] >= sizeof name) {
            reply_error(c, "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'",
                        (int)(lens[i] < 128 ? lens[i] : 128), argv[i]);
            break;
        }
        memcpy(name, argv[i], lens[i]);
        name[lens[i]] = 0;
        for (char *p = name; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
        int dup = 0;
        for (int j = 2; j < i && !dup; j += 2) {
            char other[128];
            size_t k;
            for (k = 0; k < lens[j] && k < sizeof other - 1; k++)
                other[k] = (char)((argv[j][k] >= 'A' && argv[j][k] <= 'Z') ? argv[j][k] + 32 : argv[j][k]);
            other[k] = 0;
            dup = !strcmp(config_canonical(other), config_canonical(name));
        }
        if (dup) {
            reply_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - duplicate parameter",
                        name);
            break;
        }
        /* any length (a long password): the request's own size bounds it */
        char *value = malloc(lens[i + 1] + 1);
        if (!value) {
            reply_error(c, "ERR out of memory");
            break;
        }
        memcpy(value, argv[i + 1], lens[i + 1]);
        value[lens[i + 1]] = 0;
        int has_nul = strlen(value) != lens[i + 1];
        int rc = has_nul ? -1 : config_set_param(name, value, err, sizeof err);
        if (has_nul) snprintf(err, sizeof err, "argument contains a NUL byte");
        explicit_bzero(value, lens[i + 1]);
        free(value);
        if (rc == 0) {
            reply_error(c, "ERR Unknown option or number of arguments for CONFIG SET - '%s'", name);
            break;
        }
        if (rc < 0) {
            reply_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", name, err);
            break;
        }
        failed = 0;
    }
    if (failed)
        config_restore(&saved, saved_pass);
    else
        reply_ok(c);
    if (saved_pass) {
        explicit_bzero(saved_pass, strlen(saved_pass));
        free(saved_pass);
    }
}

void cmd_config_resetstat(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    srv.total_commands = srv.total_connections = srv.rejected_connections = 0;
    srv.keyspace_hits = srv.keyspace_misses = srv.expired_keys = 0;
    srv.net_in = srv.net_out = 0;
    srv.threaded_reads = srv.threaded_writes = srv.worker_reads = srv.worker_writes = 0;
    srv.group_commits = srv.group_commit_clients = srv.group_commit_waits = 0;
    reply_ok(c);
}

static void reply_help(client *c, const char *const *lines, size_t n) {
    reply_array(c, (long long)n);
    for (size_t i = 0; i < n; i++) reply_simple(c, lines[i]);
}

void cmd_config_help(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    static const char *const lines[] = {
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
        "SET <directive> <value>", "    Set the configuration <directive> to <value>.",
        "RESETSTAT", "    Reset statistics reported by the INFO command.", "HELP",
        "    Print this help."};
    reply_help(c, lines, sizeof lines / sizeof lines[0]);
}

void cmd_client_setname(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    if (set_client_name(c, argv[2], lens[2]) == 0) reply_ok(c);
}

void cmd_client_getname(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    if (c->name)
        reply_cstr(c, c->name);
    else
        reply_null(c);
}

void cmd_client_id(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    reply_int(c, (long long)c->id);
}

/* CLIENT LIST TYPE: 0 normal, 1 replica, 2 master or pubsub (none here),
 * -1 unknown; Redis's names. */
static int client_type_by_name(const char *s, size_t n) {
    if (eq_nocase(s, n, "normal")) return 0;
    if (eq_nocase(s, n, "replica") || eq_nocase(s, n, "slave")) return 1;
    if (eq_nocase(s, n, "master") || eq_nocase(s, n, "pubsub")) return 2;
    return -1;
}

/* CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id [id ...]], as Redis 7.0. */
void cmd_client_list(client *c, int argc, char **argv, size_t *lens) {
    int type = -1, by_id = 0;
    if (argc == 4 && eq_nocase(argv[2], lens[2], "type")) {
        type = client_type_by_name(argv[3], lens[3]);
        if (type < 0) {
            reply_error(c, "ERR Unknown client type '%.*s'", (int)lens[3], argv[3]);
            return;
        }
    } else if (argc > 3 && eq_nocase(argv[2], lens[2], "id")) {
        by_id = 1;
        for (int j = 3; j < argc; j++) {
            long long id;
            if (!parse_ll(argv[j], lens[j], &id)) {
                reply_error(c, "ERR Invalid client ID");
                return;
            }
        }
    } else if (argc != 2) {
        reply_error(c, "ERR syntax error");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        reply_error(c, "ERR out of memory");
        return;
    }
    if (by_id) { /* in the order asked, as Redis */
        for (int j = 3; j < argc; j++) {
            long long id;
            parse_ll(argv[j], lens[j], &id);
            for (client *o = srv.clients; o; o = o->next)
                if (!(o->flags & CLIENT_CLOSED) && (long long)o->id == id) client_info_line(o, b);
        }
    } else {
        for (client *o = srv.clients; o; o = o->next) {
            if (o->flags & CLIENT_CLOSED) continue;
            if (type >= 0 && type != (replica_client_is_feed(o) ? 1 : 0)) continue;
            client_info_line(o, b);
        }
    }
    size_t len = evbuffer_get_length(b);
    /* an empty buffer pulls up to NULL: no client of that type */
    reply_verbatim(c, len ? (const char *)evbuffer_pullup(b, -1) : "", len);
    evbuffer_free(b);
}

void cmd_client_info(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        reply_error(c, "ERR out of memory");
        return;
    }
    client_info_line(c, b);
    size_t n = evbuffer_get_length(b);
    reply_verbatim(c, (const char *)evbuffer_pullup(b, -1), n);
    evbuffer_free(b);
}

static char *dup_arg(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

void cmd_client_kill(client *c, int argc, char **argv, size_t *lens) {
    if (argc == 3) {
        char *addr = dup_arg(argv[2], lens[2]);
        int n = addr ? net_kill_clients(0, addr, NULL, -1, 0, c) : 0;
        free(addr);
        if (n)
            reply_ok(c);
        else
            reply_error(c, "ERR No such client");
        return;
    }
    uint64_t id = 0;
    char *addr = NULL, *laddr = NULL;
    int skipme = 1, type = -1;
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc) goto syntax;
        if (eq_nocase(argv[i], lens[i], "id")) {
            long long v;
            if (!parse_ll(argv[i + 1], lens[i + 1], &v) || v <= 0) {
                reply_error(c, "ERR client-id should be greater than 0");
                goto out;
            }
            id = (uint64_t)v;
        } else if (eq_nocase(argv[i], lens[i], "addr")) {
            free(addr);
            addr = dup_arg(argv[i + 1], lens[i + 1]);
        } else if (eq_nocase(argv[i], lens[i], "laddr")) {
            free(laddr);
            laddr = dup_arg(argv[i + 1], lens[i + 1]);
        } else if (eq_nocase(argv[i], lens[i], "type")) {
            type = client_type_by_name(argv[i + 1], lens[i + 1]);
            if (type < 0) {
                reply_error(c, "ERR Unknown client type '%.*s'", (int)lens[i + 1], argv[i + 1]);
                goto out;
            }
        } else if (eq_nocase(argv[i], lens[i], "user")) {
            /* every client is the default user's: the only user there is */
            if (lens[i + 1] != 7 || memcmp(argv[i + 1], "default", 7) != 0) {
                reply_error(c, "ERR No such user '%.*s'", (int)lens[i + 1], argv[i + 1]);
                goto out;
            }
        } else if (eq_nocase(argv[i], lens[i], "skipme")) {
            if (eq_nocase(argv[i + 1], lens[i + 1], "yes"))
                skipme = 1;
            else if (eq_nocase(argv[i + 1], lens[i + 1], "no"))
                skipme = 0;
            else
                goto syntax;
        } else {
            goto syntax;
        }
    }
    reply_int(c, net_kill_clients(id, addr, laddr, type, skipme, c));
    goto out;
syntax:
    reply_error(c, "ERR syntax error");
out:
    free(addr);
    free(laddr);
}

void cmd_client_help(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    static const char *const lines[] = {
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "GETNAME",
        "    Return the name of the current connection.", "ID",
        "    Return the ID of the current connection.", "INFO",
        "    Return information about the current client connection.", "KILL <ip:port>",
        "    Kill connection made from <ip:port>.", "KILL <option> <value> [<option> <value> [...]]",
        "    Kill connections. Options are: ID, ADDR, LADDR, TYPE (NORMAL|MASTER|REPLICA|PUBSUB),",
        "    USER, SKIPME (yes|no).",
        "LIST [options ...]",
        "    Return information about client connections. Options:",
        "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)", "      Return clients of specified type.",
        "    * ID <client-id> [<client-id> ...]", "      Return clients of specified IDs only.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.", "HELP", "    Print this help."};
    reply_help(c, lines, sizeof lines / sizeof lines[0]);
}

void cmd_save(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    int rc = server_sync_all();
    if (rc)
        reply_error(c, "%s", store_error(rc));
    else
        reply_ok(c);
}

void cmd_bgsave(client *c, int argc, char **argv, size_t *lens) {
    if (argc > 2 || (argc == 2 && !eq_nocase(argv[1], lens[1], "schedule"))) {
        reply_error(c, "ERR syntax error");
        return;
    }
    int rc = server_sync_all();
    if (rc)
        reply_error(c, "%s", store_error(rc));
    else /* Redis 7.0 never forks inside EXEC: there it answers "scheduled" */
        reply_simple(c, (c->flags & CLIENT_IN_EXEC) ? "Background saving scheduled"
                                                    : "Background saving started");
}

void cmd_lastsave(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    reply_int(c, srv.last_save_s);
}

void cmd_bgrewriteaof(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    if (srv.compacting) {
        reply_error(c, "ERR Background append only file rewriting already in progress");
        return;
    }
    if (server_start_compaction() != 0) {
        reply_error(c, "ERR could not start the compaction");
        return;
    }
    reply_simple(c, (c->flags & CLIENT_IN_EXEC)
                        ? "Background append only file rewriting scheduled"
                        : "Background append only file rewriting started");
}

void cmd_time(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    long long us = now_us();
    reply_array(c, 2);
    reply_bulk_ll(c, us / 1000000);
    reply_bulk_ll(c, us % 1000000);
}

void cmd_debug_sleep(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    char buf[64];
    size_t n = lens[2] < sizeof buf - 1 ? lens[2] : sizeof buf - 1;
    memcpy(buf, argv[2], n);
    buf[n] = 0;
    double secs = strtod(buf, NULL);
    if (secs > 0 && isfinite(secs)) {
        long long us = (long long)(secs * 1e6);
        while (us > 0) {
            long long step = us > 500000 ? 500000 : us;
            usleep((useconds_t)step);
            us -= step;
        }
    }
    reply_ok(c);
}

void cmd_debug_help(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    static const char *const lines[] = {
        "DEBUG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "SLEEP <seconds>",
        "    Stop the server for <seconds>. Decimals allowed.", "HELP", "    Print this help."};
    reply_help(c, lines, sizeof lines / sizeof lines[0]);
}

void cmd_wait(client *c, int argc, char **argv, size_t *lens) {
    (void)argc;
    long long timeout, replicas;
    /* Redis's order: the count first, then the timeout. */
    if (!parse_ll(argv[1], lens[1], &replicas)) {
        reply_error(c, ERR_NOT_INT);
        return;
    }
    if (!parse_ll(argv[2], lens[2], &timeout)) {
        reply_error(c, "ERR timeout is not an integer or out of range");
        return;
    }
    if (timeout < 0) {
        reply_error(c, "ERR timeout is negative");
        return;
    }
    replica_wait(c, replicas, timeout);
}

void cmd_shutdown(client *c, int argc, char **argv, size_t *lens) {
    /* As Redis 7.0: every word is read first; ABORT with another flag, or
     * SAVE with NOSAVE, is a syntax error; ABORT alone finds no shutdown to
     * abort (this server's shutdown never waits). */
    int save = 0, nosave = 0, other = 0, abort_flag = 0;
    for (int i = 1; i < argc; i++) {
        if (eq_nocase(argv[i], lens[i], "nosave"))
            nosave = 1;
        else if (eq_nocase(argv[i], lens[i], "save"))
            save = 1;
        else if (eq_nocase(argv[i], lens[i], "now") || eq_nocase(argv[i], lens[i], "force"))
            other = 1;
        else if (eq_nocase(argv[i], lens[i], "abort"))
            abort_flag = 1;
        else {
            reply_error(c, "ERR syntax error");
            return;
        }
    }
    if ((abort_flag && (save || nosave || other)) || (save && nosave)) {
        reply_error(c, "ERR syntax error");
        return;
    }
    if (abort_flag) {
        reply_error(c, "ERR No shutdown in progress.");
        return;
    }
    server_log(LOG_WARNING_, "User requested shutdown...");
    c->flags |= CLIENT_CLOSE_AFTER_REPLY;
    server_request_shutdown();
}
