/*
 * commands.c - the command table of simdr-server and the dispatcher: lookup,
 * arity, authentication, MULTI queueing, then the command. Also MULTI, EXEC,
 * DISCARD, WATCH, UNWATCH and COMMAND (COUNT, INFO, DOCS), which read the
 * table. Error texts are Redis 7.0's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server.h"

#define RO (CMD_READONLY)
#define WR (CMD_WRITE)
#define F (CMD_FAST)

static const command_def config_subs[] = {
    {"get", cmd_config_get, -3, CMD_ADMIN, 0, 0, 0, "server", "Get the values of configuration parameters", NULL},
    {"set", cmd_config_set, -4, CMD_ADMIN, 0, 0, 0, "server", "Set configuration parameters", NULL},
    {"resetstat", cmd_config_resetstat, 2, CMD_ADMIN, 0, 0, 0, "server", "Reset the statistics", NULL},
    {"help", cmd_config_help, 2, 0, 0, 0, 0, "server", "Show helpful text", NULL},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL}};

static const command_def client_subs[] = {
    {"setname", cmd_client_setname, 3, 0, 0, 0, 0, "connection", "Set the connection name", NULL},
    {"getname", cmd_client_getname, 2, 0, 0, 0, 0, "connection", "Get the connection name", NULL},
    {"id", cmd_client_id, 2, 0, 0, 0, 0, "connection", "Return the client ID", NULL},
    {"list", cmd_client_list, -2, CMD_ADMIN, 0, 0, 0, "connection", "List client connections", NULL},
    {"info", cmd_client_info, 2, 0, 0, 0, 0, "connection", "Information about this connection", NULL},
    {"kill", cmd_client_kill, -3, CMD_ADMIN, 0, 0, 0, "connection", "Kill connections", NULL},
    {"help", cmd_client_help, 2, 0, 0, 0, 0, "connection", "Show helpful text", NULL},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL}};

static const command_def command_subs[] = {
    {"count", cmd_command_count, 2, 0, 0, 0, 0, "server", "Number of commands", NULL},
    {"docs", cmd_command_docs, -2, 0, 0, 0, 0, "server", "Documentary information about commands", NULL},
    {"info", cmd_command_info, -2, 0, 0, 0, 0, "server", "Information about commands", NULL},
    {"help", cmd_command_help, 2, 0, 0, 0, 0, "server", "Show helpful text", NULL},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL}};

static const command_def debug_subs[] = {
    {"sleep", cmd_debug_sleep, 3, CMD_ADMIN, 0, 0, 0, "server", "Block the server for some seconds", NULL},
    {"help", cmd_debug_help, 2, 0, 0, 0, 0, "server", "Show helpful text", NULL},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL}};

static const command_def table[] = {
    /* strings */
    {"get", cmd_get, 2, RO | F, 1, 1, 1, "string", "Get the value of a key", NULL},
    {"set", cmd_set, -3, WR, 1, 1, 1, "string", "Set the string value of a key", NULL},
    {"setnx", cmd_setnx, 3, WR | F, 1, 1, 1, "string", "Set the value of a key, only if the key does not exist", NULL},
    {"setex", cmd_setex, 4, WR, 1, 1, 1, "string", "Set the value and expiration of a key", NULL},
    {"psetex", cmd_psetex, 4, WR, 1, 1, 1, "string", "Set the value and expiration in milliseconds of a key", NULL},
    {"getset", cmd_getset, 3, WR | F, 1, 1, 1, "string", "Set the string value of a key and return its old value", NULL},
    {"getdel", cmd_getdel, 2, WR | F, 1, 1, 1, "string", "Get the value of a key and delete the key", NULL},
    {"getex", cmd_getex, -2, WR | F, 1, 1, 1, "string", "Get the value of a key and optionally set its expiration", NULL},
    {"mget", cmd_mget, -2, RO | F, 1, -1, 1, "string", "Get the values of all the given keys", NULL},
    {"mset", cmd_mset, -3, WR, 1, -1, 2, "string", "Set multiple keys to multiple values", NULL},
    {"msetnx", cmd_msetnx, -3, WR, 1, -1, 2, "string", "Set multiple keys to multiple values, only if none of the keys exist", NULL},
    {"append", cmd_append, 3, WR, 1, 1, 1, "string", "Append a value to a key", NULL},
    {"strlen", cmd_strlen, 2, RO | F, 1, 1, 1, "string", "Get the length of the value stored in a key", NULL},
    {"getrange", cmd_getrange, 4, RO, 1, 1, 1, "string", "Get a substring of the string stored at a key", NULL},
    {"setrange", cmd_setrange, 4, WR, 1, 1, 1, "string", "Overwrite part of a string at key starting at the specified offset", NULL},
    {"incr", cmd_incr, 2, WR | F, 1, 1, 1, "string", "Increment the integer value of a key by one", NULL},
    {"decr", cmd_decr, 2, WR | F, 1, 1, 1, "string", "Decrement the integer value of a key by one", NULL},
    {"incrby", cmd_incrby, 3, WR | F, 1, 1, 1, "string", "Increment the integer value of a key by the given amount", NULL},
    {"decrby", cmd_decrby, 3, WR | F, 1, 1, 1, "string", "Decrement the integer value of a key by the given number", NULL},
    {"incrbyfloat", cmd_incrbyfloat, 3, WR | F, 1, 1, 1, "string", "Increment the float value of a key by the given amount", NULL},
    /* keys */
    {"del", cmd_del, -2, WR, 1, -1, 1, "generic", "Delete a key", NULL},
    {"unlink", cmd_del, -2, WR | F, 1, -1, 1, "generic", "Delete a key (same as DEL here)", NULL},
    {"exists", cmd_exists, -2, RO | F, 1, -1, 1, "generic", "Determine if a key exists", NULL},
    {"type", cmd_type, 2, RO | F, 1, 1, 1, "generic", "Determine the type stored at key", NULL},
    {"rename", cmd_rename, 3, WR, 1, 2, 1, "generic", "Rename a key", NULL},
    {"renamenx", cmd_renamenx, 3, WR | F, 1, 2, 1, "generic", "Rename a key, only if the new key does not exist", NULL},
    {"copy", cmd_copy, -3, WR, 1, 2, 1, "generic", "Copy a key", NULL},
    {"keys", cmd_keys, 2, RO, 0, 0, 0, "generic", "Find all keys matching the given pattern", NULL},
    {"scan", cmd_scan, -2, RO, 0, 0, 0, "generic", "Incrementally iterate the keys space", NULL},
    {"randomkey", cmd_randomkey, 1, RO, 0, 0, 0, "generic", "Return a random key from the keyspace", NULL},
    {"dbsize", cmd_dbsize, 1, RO | F, 0, 0, 0, "server", "Return the number of keys in the selected database", NULL},
    {"touch", cmd_touch, -2, RO | F, 1, -1, 1, "generic", "Count the keys that exist (alters last access time)", NULL},
    {"expire", cmd_expire, -3, WR | F, 1, 1, 1, "generic", "Set a key's time to live in seconds", NULL},
    {"pexpire", cmd_pexpire, -3, WR | F, 1, 1, 1, "generic", "Set a key's time to live in milliseconds", NULL},
    {"expireat", cmd_expireat, -3, WR | F, 1, 1, 1, "generic", "Set the expiration for a key as a UNIX timestamp", NULL},
    {"pexpireat", cmd_pexpireat, -3, WR | F, 1, 1, 1, "generic", "Set the expiration for a key as a UNIX timestamp in milliseconds", NULL},
    {"ttl", cmd_ttl, 2, RO | F, 1, 1, 1, "generic", "Get the time to live for a key in seconds", NULL},
    {"pttl", cmd_pttl, 2, RO | F, 1, 1, 1, "generic", "Get the time to live for a key in milliseconds", NULL},
    {"expiretime", cmd_expiretime, 2, RO | F, 1, 1, 1, "generic", "Get the expiration Unix timestamp for a key", NULL},
    {"pexpiretime", cmd_pexpiretime, 2, RO | F, 1, 1, 1, "generic", "Get the expiration Unix timestamp for a key in milliseconds", NULL},
    {"persist", cmd_persist, 2, WR | F, 1, 1, 1, "generic", "Remove the expiration from a key", NULL},
    /* connection and server */
    {"ping", cmd_ping, -1, F, 0, 0, 0, "connection", "Ping the server", NULL},
    {"echo", cmd_echo, 2, F, 0, 0, 0, "connection", "Echo the given string", NULL},
    {"auth", cmd_auth, -2, CMD_NOAUTH | F, 0, 0, 0, "connection", "Authenticate to the server", NULL},
    {"hello", cmd_hello, -1, CMD_NOAUTH | F, 0, 0, 0, "connection", "Handshake with Redis", NULL},
    {"quit", cmd_quit, -1, CMD_NOAUTH | F, 0, 0, 0, "connection", "Close the connection", NULL},
    {"reset", cmd_reset, 1, CMD_NOAUTH | F, 0, 0, 0, "connection", "Reset the connection", NULL},
    {"select", cmd_select, 2, F, 0, 0, 0, "connection", "Change the selected database for the current connection", NULL},
    {"flushdb", cmd_flushdb, -1, WR, 0, 0, 0, "server", "Remove all keys from the current database", NULL},
    {"flushall", cmd_flushall, -1, WR, 0, 0, 0, "server", "Remove all keys from all databases", NULL},
    {"swapdb", cmd_swapdb, 3, WR | F, 0, 0, 0, "server", "Swaps two Redis databases", NULL},
    {"info", cmd_info, -1, 0, 0, 0, 0, "server", "Get information and statistics about the server", NULL},
    {"config", NULL, -2, CMD_CONTAINER, 0, 0, 0, "server", "A container for server configuration commands", config_subs},
    {"client", NULL, -2, CMD_CONTAINER, 0, 0, 0, "connection", "A container for client connection commands", client_subs},
    {"command", cmd_command, -1, CMD_CONTAINER, 0, 0, 0, "server", "Get array of Redis command details", command_subs},
    {"debug", NULL, -2, CMD_CONTAINER | CMD_ADMIN, 0, 0, 0, "server", "A container for debugging commands", debug_subs},
    {"save", cmd_save, 1, CMD_ADMIN | CMD_NOMULTI, 0, 0, 0, "server", "Synchronously save the dataset to disk", NULL},
    {"bgsave", cmd_bgsave, -1, CMD_ADMIN, 0, 0, 0, "server", "Asynchronously save the dataset to disk", NULL},
    {"lastsave", cmd_lastsave, 1, F, 0, 0, 0, "server", "Get the UNIX time stamp of the last successful save to disk", NULL},
    {"bgrewriteaof", cmd_bgrewriteaof, 1, CMD_ADMIN, 0, 0, 0, "server", "Compact the store files in the background", NULL},
    {"time", cmd_time, 1, F, 0, 0, 0, "server", "Return the current server time", NULL},
    {"wait", cmd_wait, 3, 0, 0, 0, 0, "generic", "Wait for the synchronous replication of all the write commands", NULL},
    {"replicaof", cmd_replicaof, 3, CMD_ADMIN, 0, 0, 0, "server", "Make the server a replica of another instance, or promote it as master", NULL},
    {"slaveof", cmd_replicaof, 3, CMD_ADMIN, 0, 0, 0, "server", "Make the server a replica of another instance, or promote it as master", NULL},
    {"replsync", cmd_replsync, -2, CMD_ADMIN | CMD_NOMULTI, 0, 0, 0, "server", "Start streaming the store files to a replica (internal)", NULL},
    {"replack", cmd_replack, 4, CMD_ADMIN | CMD_NOMULTI, 0, 0, 0, "server", "A replica acknowledges its tails (internal)", NULL},
    {"shutdown", cmd_shutdown, -1, CMD_ADMIN | CMD_NOMULTI, 0, 0, 0, "server", "Synchronously save the dataset to disk and then shut down the server", NULL},
    {"multi", cmd_multi, 1, F, 0, 0, 0, "transactions", "Mark the start of a transaction block", NULL},
    {"exec", cmd_exec, 1, 0, 0, 0, 0, "transactions", "Execute all commands issued after MULTI", NULL},
    {"discard", cmd_discard, 1, F, 0, 0, 0, "transactions", "Discard all commands issued after MULTI", NULL},
    {"watch", cmd_watch, -2, F, 1, -1, 1, "transactions", "Watch the given keys to determine execution of the MULTI/EXEC block", NULL},
    {"unwatch", cmd_unwatch, 1, F, 0, 0, 0, "transactions", "Forget about all watched keys", NULL},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL}};

const command_def *commands_table(void) { return table; }

size_t commands_count(void) { return sizeof table / sizeof table[0] - 1; }

const command_def *command_find(const command_def *t, const char *name, size_t len) {
    if (!len) return NULL;
    char first = (char)(name[0] >= 'A' && name[0] <= 'Z' ? name[0] + 32 : name[0]);
    for (; t->name; t++) /* the first letter rules out most entries cheaply */
        if (t->name[0] == first && strlen(t->name) == len && strncasecmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

server_db *client_db(client *c) { return &srv.db[c->db]; }

static int arity_ok(const command_def *cmd, int argc) {
    return cmd->arity > 0 ? argc == cmd->arity : argc >= -cmd->arity;
}

static void flag_transaction(client *c) {
    if (c->flags & CLIENT_MULTI) c->flags |= CLIENT_MULTI_ERROR;
}

static void reply_unknown_command(client *c, int argc, char **argv, size_t *lens) {
    char args[512];
    size_t n = 0;
    args[0] = 0;
    for (int i = 1; i < argc && n < 128; i++) {
        int room = 128 - (int)n;
        int w = snprintf(args + n, sizeof args - n, "'%.*s' ",
                         (int)(lens[i] < (size_t)room ? lens[i] : (size_t)room), argv[i]);
        if (w < 0) break;
        n += (size_t)w;
        if (n >= sizeof args) n = sizeof args - 1;
    }
    int nl = (int)(lens[0] < 128 ? lens[0] : 128);
    reply_error(c, "ERR unknown command '%.*s', with args beginning with: %s", nl, argv[0], args);
}

static void save_command(client *c, int argc, char **argv, size_t *lens) {
    if (c->mq_len == c->mq_cap) {
        int cap = c->mq_cap ? c->mq_cap * 2 : 8;
        saved_cmd *n = realloc(c->mq, (size_t)cap * sizeof *n);
        if (!n) {
            reply_error(c, "ERR out of memory");
            flag_transaction(c);
            return;
        }
        c->mq = n;
        c->mq_cap = cap;
    }
    saved_cmd *s = &c->mq[c->mq_len];
    s->argc = argc;
    s->argv = malloc((size_t)argc * sizeof *s->argv);
    s->lens = malloc((size_t)argc * sizeof *s->lens);
    if (!s->argv || !s->lens) {
        free(s->argv);
        free(s->lens);
        reply_error(c, "ERR out of memory");
        flag_transaction(c);
        return;
    }
    for (int i = 0; i < argc; i++) {
        s->argv[i] = malloc(lens[i] + 1);
        if (s->argv[i]) {
            memcpy(s->argv[i], argv[i], lens[i]);
            s->argv[i][lens[i]] = 0;
        }
        s->lens[i] = s->argv[i] ? lens[i] : 0;
    }
    c->mq_len++;
    reply_simple(c, "QUEUED");
}

void client_discard_multi(client *c) {
    for (int i = 0; i < c->mq_len; i++) {
        for (int j = 0; j < c->mq[i].argc; j++) free(c->mq[i].argv[j]);
        free(c->mq[i].argv);
        free(c->mq[i].lens);
    }
    c->mq_len = 0;
    c->flags &= ~(unsigned)(CLIENT_MULTI | CLIENT_MULTI_ERROR);
}

/* Which (database, key) pairs some client watches, as counts in buckets of
 * their hash: a write looks here before it searches the clients' lists,
 * so writes to keys nobody watches stay O(1) however many clients watch. */
#define WATCH_FILTER_BUCKETS 4096u
static uint32_t watch_filter[WATCH_FILTER_BUCKETS];

static uint32_t *watch_bucket(int db, const void *key, size_t len) {
    uint64_t h = simdr_hash_key(key, len) ^ ((uint64_t)(db + 1) * UINT64_C(0x9E3779B97F4A7C15));
    return &watch_filter[h % WATCH_FILTER_BUCKETS];
}

/* Compactions started plus compactions finished: even while none runs. A
 * compaction moves every record to a new file, so a watched key's mark (an
 * offset) can be compared only when the epoch is the same even number at
 * WATCH and at EXEC: no compaction ran meanwhile. */
static uint64_t compaction_epoch(void) {
    return srv.compactions * 2 + (uint64_t)(srv.compacting != 0);
}

void client_unwatch(client *c) {
    for (int i = 0; i < c->nwatched; i++) {
        (*watch_bucket(c->watched[i].db, c->watched[i].key, c->watched[i].len))--;
        free(c->watched[i].key);
    }
    srv.watched_keys -= (uint64_t)c->nwatched;
    c->nwatched = 0;
    c->flags &= ~(unsigned)CLIENT_DIRTY_CAS;
}

/* Finds the command (and subcommand) or replies with Redis's error. */
static const command_def *resolve(client *c, int argc, char **argv, size_t *lens,
                                  char *fullname, size_t cap) {
    const command_def *cmd = command_find(table, argv[0], lens[0]);
    if (!cmd) {
        reply_unknown_command(c, argc, argv, lens);
        return NULL;
    }
    size_t nl = strlen(cmd->name);
    if (nl >= cap) nl = cap - 1;
    memcpy(fullname, cmd->name, nl);
    fullname[nl] = 0;
    if ((cmd->flags & CMD_CONTAINER) && argc >= 2) {
        const command_def *sub = command_find(cmd->subs, argv[1], lens[1]);
        if (!sub) {
            char upper[64];
            size_t i;
            for (i = 0; i < lens[0] && i < sizeof upper - 1; i++)
                upper[i] = (char)((argv[0][i] >= 'a' && argv[0][i] <= 'z') ? argv[0][i] - 32 : argv[0][i]);
            upper[i] = 0;
            reply_error(c, "ERR unknown subcommand '%.*s'. Try %s HELP.",
                        (int)(lens[1] < 128 ? lens[1] : 128), argv[1], upper);
            return NULL;
        }
        snprintf(fullname, cap, "%s|%s", cmd->name, sub->name);
        cmd = sub;
    }
    if (!arity_ok(cmd, argc)) {
        reply_error(c, "ERR wrong number of arguments for '%s' command", fullname);
        return NULL;
    }
    return cmd;
}

/* Commands that reach the store only through ks_lookup/ks_write/ks_delete,
 * which see the turn's pending writes: they run without flushing them. Every
 * other command may read the engine directly (iteration, counts, WATCH
 * offsets, file sizes), so the pending writes go out before it runs. */
static int sees_pending_writes(command_fn fn) {
    static const command_fn safe[] = {
        cmd_get, cmd_set, cmd_setnx, cmd_setex, cmd_psetex, cmd_getset, cmd_getdel, cmd_getex,
        cmd_mset, cmd_msetnx, cmd_append, cmd_strlen, cmd_getrange, cmd_setrange, cmd_incr,
        cmd_decr, cmd_incrby, cmd_decrby, cmd_incrbyfloat, cmd_del, cmd_exists, cmd_touch,
        cmd_type, cmd_expire, cmd_pexpire, cmd_expireat, cmd_pexpireat, cmd_ttl, cmd_pttl,
        cmd_expiretime, cmd_pexpiretime, cmd_persist, cmd_ping, cmd_echo, cmd_select};
    for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++)
        if (safe[i] == fn) return 1;
    return 0;
}

/* For WRITE_RETRY_MS after a store write or sync failed (a full disk, an I/O
 * error), write commands get Redis's MISCONF error instead of being run:
 * their writes would fail the same way, and the store refusing a turn's
 * batch closes the connections of every client that wrote in it (net.c).
 * FLUSHDB and FLUSHALL still run: they give the space back. 1 when refused. */
int misconf_refuses(client *c) {
    if (!srv.write_error || now_ms() - srv.write_error_ms >= WRITE_RETRY_MS) return 0;
    reply_error(c, "MISCONF Errors writing to the store file: %s", simdr_strerror(srv.write_error));
    return 1;
}

int store_refuses_writes(client *c, const command_def *cmd) {
    if (!(cmd->flags & CMD_WRITE) || cmd->fn == cmd_flushdb || cmd->fn == cmd_flushall) return 0;
    return misconf_refuses(c);
}

static void run_command(client *c, const command_def *cmd, int argc, char **argv, size_t *lens) {
    ks_pending_safe_point(); /* no ks_ref is held between commands */
    if (!sees_pending_writes(cmd->fn))
        ks_flush_pending();
    else if (!(c->flags & CLIENT_IN_EXEC)) /* a transaction's records: one batch */
        ks_pending_command_start();
    srv.total_commands++;
    if (cmd->flags & CMD_WRITE) c->flags |= CLIENT_WROTE;
    ks_take_served_pending();
    cmd->fn(c, argc, argv, lens);
    /* A reply built from another client's write of this turn depends on the
     * store taking it, as that client's reply does. */
    if (ks_take_served_pending()) c->flags |= CLIENT_SAW_PENDING;
}

void commands_execute(client *c, int argc, char **argv, size_t *lens) {
    char fullname[64];
    if (eq_nocase(argv[0], lens[0], "quit")) {
        cmd_quit(c, argc, argv, lens);
        return;
    }
    const command_def *cmd = resolve(c, argc, argv, lens, fullname, sizeof fullname);
    if (!cmd) {
        flag_transaction(c);
        return;
    }
    size_t fl = strlen(fullname);
    if (fl >= sizeof c->last_cmd) fl = sizeof c->last_cmd - 1;
    memcpy(c->last_cmd, fullname, fl);
    c->last_cmd[fl] = 0;
    if (srv.cfg.requirepass && !c->authenticated && !(cmd->flags & CMD_NOAUTH)) {
        reply_error(c, "NOAUTH Authentication required.");
        flag_transaction(c);
        return;
    }
    if (replica_refuses(c, cmd) || store_refuses_writes(c, cmd)) {
        flag_transaction(c);
        return;
    }
    if ((c->flags & CLIENT_MULTI) && (cmd->flags & CMD_NOMULTI)) {
        reply_error(c, "ERR Command not allowed inside a transaction");
        flag_transaction(c);
        return;
    }
    if ((c->flags & CLIENT_MULTI) && cmd->fn != cmd_exec && cmd->fn != cmd_discard &&
        cmd->fn != cmd_multi && cmd->fn != cmd_watch && cmd->fn != cmd_reset) {
        save_command(c, argc, argv, lens);
        return;
    }
    if (!cmd->fn) { /* container without arguments has arity -2: unreachable */
        reply_error(c, "ERR wrong number of arguments for '%s' command", fullname);
        return;
    }
    run_command(c, cmd, argc, argv, lens);
}

/* ---- transactions ---- */

void cmd_multi(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    if (c->flags & CLIENT_MULTI) {
        reply_error(c, "ERR MULTI calls can not be nested");
        return;
    }
    c->flags |= CLIENT_MULTI;
    reply_ok(c);
}

void cmd_discard(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    if (!(c->flags & CLIENT_MULTI)) {
        reply_error(c, "ERR DISCARD without MULTI");
        return;
    }
    client_discard_multi(c);
    client_unwatch(c);
    reply_ok(c);
}

/* A watched key's epoch that matches no compaction epoch (those of a
 * compaction in progress are odd, this one is never reached): the key is
 * compared by presence only (watch_record_moved). */
#define WATCH_PRESENCE_ONLY UINT64_MAX

/* Where the key's newest record ends, 0 when the key is absent (a record's
 * payload can start at offset 0, its end never does). */
static uint64_t watched_mark(int db, const char *key, size_t len) {
    ks_ref ref;
    uint64_t mark = 0;
    if (ks_lookup(&srv.db[db], key, len, key_now_ms(), &ref) == 1) {
        mark = simdr_entry_end(ref.entry);
        ks_ref_release(&ref);
    }
    return mark;
}

static int watching(const watched_key *w, int db, const void *key, size_t len) {
    return w->db == db && w->len == len && memcmp(w->key, key, len) == 0;
}

/* Every write of a key (and its deletion) comes here: the clients watching it
 * will abort their EXEC, as Redis's do, whether or not the mark would show it
 * (it cannot across a compaction). */
void watch_touch_key(int db, const void *key, size_t len) {
    if (!srv.watched_keys || !*watch_bucket(db, key, len)) return;
    for (client *c = srv.clients; c; c = c->next) {
        if (c->flags & CLIENT_DIRTY_CAS) continue;
        for (int i = 0; i < c->nwatched; i++) {
            watched_key *w = &c->watched[i];
            if (watching(w, db, key, len)) {
                c->flags |= CLIENT_DIRTY_CAS;
                break;
            }
        }
    }
}

void watch_record_moved(int db, const void *key, size_t len) {
    if (!srv.watched_keys || !*watch_bucket(db, key, len)) return;
    for (client *c = srv.clients; c; c = c->next)
        for (int i = 0; i < c->nwatched; i++) {
            watched_key *w = &c->watched[i];
            if (watching(w, db, key, len)) w->epoch = WATCH_PRESENCE_ONLY;
        }
}

void watch_touch_db(int emptied, int replaced_with) {
    for (client *c = srv.clients; c; c = c->next) {
        if (c->flags & CLIENT_DIRTY_CAS) continue;
        for (int i = 0; i < c->nwatched; i++) {
            watched_key *w = &c->watched[i];
            if (w->db != emptied) continue;
            if (watched_mark(emptied, w->key, w->len) ||
                (replaced_with >= 0 && watched_mark(replaced_with, w->key, w->len))) {
                c->flags |= CLIENT_DIRTY_CAS;
                break;
            }
        }
    }
}

void cmd_watch(client *c, int argc, char **argv, size_t *lens) {
    if (c->flags & CLIENT_MULTI) {
        reply_error(c, "ERR WATCH inside MULTI is not allowed");
        return;
    }
    for (int i = 1; i < argc; i++) {
        int dup = 0;
        for (int j = 0; j < c->nwatched; j++)
            if (watching(&c->watched[j], c->db, argv[i], lens[i])) dup = 1;
        if (dup) continue;
        if (c->nwatched == c->watch_cap) {
            int cap = c->watch_cap ? c->watch_cap * 2 : 8;
            watched_key *n = realloc(c->watched, (size_t)cap * sizeof *n);
            if (!n) break;
            c->watched = n;
            c->watch_cap = cap;
        }
        watched_key *w = &c->watched[c->nwatched];
        w->key = malloc(lens[i] ? lens[i] : 1);
        if (!w->key) break;
        memcpy(w->key, argv[i], lens[i]);
        w->len = lens[i];
        w->db = c->db;
        w->mark = watched_mark(c->db, argv[i], lens[i]);
        w->epoch = compaction_epoch();
        (*watch_bucket(c->db, argv[i], lens[i]))++;
        c->nwatched++;
        srv.watched_keys++;
    }
    reply_ok(c);
}

void cmd_unwatch(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    client_unwatch(c);
    reply_ok(c);
}

static int watch_broken(client *c) {
    if (c->flags & CLIENT_DIRTY_CAS) return 1;
    uint64_t epoch = compaction_epoch();
    for (int i = 0; i < c->nwatched; i++) {
        watched_key *w = &c->watched[i];
        uint64_t mark = watched_mark(w->db, w->key, w->len);
        /* Across a compaction the offsets differ; every write touched the
         * watchers (watch_touch_key), so what is left to see is a key that
         * expired: present then, absent now. */
        int same_file = w->epoch == epoch && !(epoch & 1);
        if (same_file ? mark != w->mark : (mark != 0) != (w->mark != 0)) return 1;
    }
    /* The lookups above remove a watched key that expired since it was
     * written: a key absent at WATCH, written (with a TTL) and expired by
     * now reads as absent again, yet was changed, as the deletion's
     * watch_touch_key says (Redis aborts: the write touched it). */
    return (c->flags & CLIENT_DIRTY_CAS) != 0;
}

static const command_def *saved_command_def(const saved_cmd *s) {
    const command_def *cmd = command_find(table, s->argv[0], s->lens[0]);
    if (cmd && (cmd->flags & CMD_CONTAINER) && s->argc >= 2)
        cmd = command_find(cmd->subs, s->argv[1], s->lens[1]);
    return cmd;
}

void cmd_exec(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    if (!(c->flags & CLIENT_MULTI)) {
        reply_error(c, "ERR EXEC without MULTI");
        return;
    }
    if (c->flags & CLIENT_MULTI_ERROR) {
        reply_error(c, "EXECABORT Transaction discarded because of previous errors.");
        client_discard_multi(c);
        client_unwatch(c);
        return;
    }
    if (watch_broken(c)) {
        reply_null_array(c);
        client_discard_multi(c);
        client_unwatch(c);
        return;
    }
    for (int i = 0; i < c->mq_len; i++) {
        const command_def *cmd = saved_command_def(&c->mq[i]);
        if (cmd && replica_forbids(cmd)) { /* queued before the server became a replica */
            reply_error(c, "EXECABORT Transaction discarded because of: READONLY You can't "
                           "write against a read only replica.");
            client_discard_multi(c);
            client_unwatch(c);
            return;
        }
    }
    saved_cmd *q = c->mq;
    int n = c->mq_len;
    c->mq = NULL;
    c->mq_len = c->mq_cap = 0;
    c->flags &= ~(unsigned)(CLIENT_MULTI | CLIENT_MULTI_ERROR);
    client_unwatch(c);
    reply_array(c, n);
    c->flags |= CLIENT_IN_EXEC; /* the array's replies come in order, none blocks */
    srv.exec_time_ms = now_ms();
    for (int i = 0; i < n; i++) {
        const command_def *cmd = saved_command_def(&q[i]);
        if (cmd && cmd->fn) {
            run_command(c, cmd, q[i].argc, q[i].argv, q[i].lens);
        } else {
            reply_error(c, "ERR unknown command");
        }
        for (int j = 0; j < q[i].argc; j++) free(q[i].argv[j]);
        free(q[i].argv);
        free(q[i].lens);
    }
    c->flags &= ~(unsigned)CLIENT_IN_EXEC;
    srv.exec_time_ms = 0;
    free(q);
}

/* ---- COMMAND ---- */

static void reply_flags(client *c, unsigned f) {
    const char *names[8];
    int n = 0;
    if (f & CMD_WRITE) names[n++] = "write";
    if (f & CMD_READONLY) names[n++] = "readonly";
    if (f & CMD_ADMIN) names[n++] = "admin";
    if (f & CMD_NOAUTH) names[n++] = "no_auth";
    if (f & CMD_FAST) names[n++] = "fast";
    char hdr[16];
    int k = snprintf(hdr, sizeof hdr, "%c%d\r\n", c->resp == 3 ? '~' : '*', n);
    reply_raw(c, hdr, (size_t)k);
    for (int i = 0; i < n; i++) reply_simple(c, names[i]);
}

static void reply_info_named(client *c, const command_def *cmd, const char *fullname) {
    reply_array(c, 10);
    reply_cstr(c, fullname);
    reply_int(c, cmd->arity);
    reply_flags(c, cmd->flags);
    reply_int(c, cmd->first_key);
    reply_int(c, cmd->last_key);
    reply_int(c, cmd->key_step);
    reply_empty_array(c); /* ACL categories */
    reply_empty_array(c); /* tips */
    reply_empty_array(c); /* key specs */
    if (cmd->subs) {
        long long n = 0;
        for (const command_def *s = cmd->subs; s->name; s++) n++;
        reply_array(c, n);
        for (const command_def *s = cmd->subs; s->name; s++) {
            char full[80];
            snprintf(full, sizeof full, "%s|%s", cmd->name, s->name);
            reply_info_named(c, s, full);
        }
    } else {
        reply_empty_array(c);
    }
}

void commands_reply_info(client *c, const command_def *cmd) { reply_info_named(c, cmd, cmd->name); }

void cmd_command(client *c, int argc, char **argv, size_t *lens) {
    (void)argv, (void)lens;
    if (argc != 1) return; /* subcommands are dispatched separately */
    reply_array(c, (long long)commands_count());
    for (const command_def *t = table; t->name; t++) commands_reply_info(c, t);
}

void cmd_command_count(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    reply_int(c, (long long)commands_count());
}

void cmd_command_info(client *c, int argc, char **argv, size_t *lens) {
    if (argc == 2) {
        cmd_command(c, 1, argv, lens);
        return;
    }
    reply_array(c, argc - 2);
    for (int i = 2; i < argc; i++) {
        const command_def *cmd = command_find(table, argv[i], lens[i]);
        if (cmd)
            commands_reply_info(c, cmd);
        else
            reply_null_array(c);
    }
}

static void reply_doc(client *c, const command_def *cmd, const char *fullname) {
    reply_cstr(c, fullname);
    reply_map(c, cmd->subs ? 4 : 3);
    reply_cstr(c, "summary");
    reply_cstr(c, cmd->summary);
    reply_cstr(c, "since");
    reply_cstr(c, "1.0.0");
    reply_cstr(c, "group");
    reply_cstr(c, cmd->group);
    if (cmd->subs) {
        long long n = 0;
        for (const command_def *s = cmd->subs; s->name; s++) n++;
        reply_cstr(c, "subcommands");
        reply_map(c, n);
        for (const command_def *s = cmd->subs; s->name; s++) {
            char full[80];
            snprintf(full, sizeof full, "%s|%s", cmd->name, s->name);
            reply_doc(c, s, full);
        }
    }
}

void cmd_command_docs(client *c, int argc, char **argv, size_t *lens) {
    if (argc == 2) {
        reply_map(c, (long long)commands_count());
        for (const command_def *t = table; t->name; t++) reply_doc(c, t, t->name);
        return;
    }
    long long n = 0;
    for (int i = 2; i < argc; i++)
        if (command_find(table, argv[i], lens[i])) n++;
    reply_map(c, n);
    for (int i = 2; i < argc; i++) {
        const command_def *cmd = command_find(table, argv[i], lens[i]);
        if (cmd) reply_doc(c, cmd, cmd->name);
    }
}

void cmd_command_help(client *c, int argc, char **argv, size_t *lens) {
    (void)argc, (void)argv, (void)lens;
    static const char *lines[] = {
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)", "    Return details about all commands.", "COUNT",
        "    Return the total number of commands in this server.", "DOCS [<command-name> ...]",
        "    Return documentation details about multiple commands.",
        "INFO [<command-name> ...]", "    Return details about multiple commands.", "HELP",
        "    Print this help."};
    reply_array(c, (long long)(sizeof lines / sizeof lines[0]));
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) reply_simple(c, lines[i]);
}
