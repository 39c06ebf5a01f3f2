/*
 * cmd_transfer.c - commands that move a value somewhere else: copy and move
 * (to another store file, created if missing) and rename (within the store).
 */
#include <stdio.h>
#include <sys/stat.h>

#include "cli.h"

/* Both files are opened by this one process; if they are the same file the
 * second open would report a lock held by "another process", which would
 * mislead. Catch it first and say what is really wrong. */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int transfer(const struct cli_args *a, int is_move) {
    const char *verb = is_move ? "move" : "copy";
    const char *target = a->argv[1];
    char fq[512], tq[512];
    cli_quote(fq, sizeof fq, a->store_path);
    cli_quote(tq, sizeof tq, target);
    if (same_file(a->store_path, target)) {
        cli_err("%s: cannot %s to %s: source and target are the same file", fq, verb, tq);
        return CLI_FAIL;
    }
    struct cli_key key;
    int rc = cli_key_from_arg(a, a->argv[0], &key);
    if (rc != CLI_OK)
        return rc;
    char q[512];
    cli_quote(q, sizeof q, key.text);
    simdr_store *src = NULL, *dst = NULL;
    int created = 0;
    /* copy leaves the source untouched, so it opens it read-only (and a
     * missing source is an error, never a new file); move deletes from it. */
    /* --layout is for a target the command creates: the source is opened
     * in its own layout, and not warned about. */
    struct cli_args src_args = *a;
    src_args.layout = -1;
    int ret = cli_open_store(&src_args, a->store_path,
                             is_move ? SIMDR_OPEN_EXISTING : SIMDR_OPEN_READONLY, &src);
    if (ret == CLI_OK) {
        /* A missing key is found before the target is opened, so a failed
         * copy creates no file. */
        rc = simdr_exists(src, key.data, key.len);
        if (rc == 0) {
            cli_err("%s: key %s not found", fq, q);
            ret = CLI_FAIL;
        }
    }
    if (ret == CLI_OK)
        ret = cli_open_store_created(a, target, SIMDR_OPEN_CREATE, &dst, &created);
    if (ret == CLI_OK) {
        rc = is_move ? simdr_move(src, key.data, key.len, dst, NULL)
                     : simdr_copy(src, key.data, key.len, dst, NULL);
        /* The name goes with the value; a move takes it from the source.
         * Either failing (a full disk) leaves the transfer done: said as
         * such, never as a failed copy or move. */
        char what[1600];
        snprintf(what, sizeof what, "%s: %s %s to %s", fq, verb, q, tq);
        if (rc == SIMDR_OK)
            cli_name_put_or_warn(dst, key.data, key.len, what);
        if (rc == SIMDR_OK && is_move && cli_name_delete(src, key.data, key.len) != SIMDR_OK)
            cli_err("%s: done, but the source keeps the key's name record (%s); compact drops it",
                    what, simdr_last_error());
        if (rc == SIMDR_NOTFOUND) {
            cli_err("%s: key %s not found", fq, q);
            ret = CLI_FAIL;
        } else if (rc != SIMDR_OK) {
            ret = cli_fail_simdr(rc, "%s: %s %s to %s", fq, verb, q, tq);
        } else {
            cli_note(a, "%s key %s to %s", is_move ? "Moved" : "Copied", q, tq);
        }
    }
    int c1 = cli_close_store_created(dst, target, created, ret != CLI_OK);
    int c2 = cli_close_store(src, a->store_path);
    cli_key_free(&key);
    if (ret != CLI_OK)
        return ret;
    return c1 != CLI_OK ? c1 : c2;
}

int cmd_copy(const struct cli_args *a) { return transfer(a, 0); }

int cmd_move(const struct cli_args *a) { return transfer(a, 1); }

int cmd_rename(const struct cli_args *a) {
    struct cli_key oldk, newk;
    int rc = cli_key_from_arg(a, a->argv[0], &oldk);
    if (rc != CLI_OK)
        return rc;
    rc = cli_key_from_arg(a, a->argv[1], &newk);
    if (rc != CLI_OK) {
        cli_key_free(&oldk);
        return rc;
    }
    char oq[512], nq[512], fq[512];
    cli_quote(oq, sizeof oq, oldk.text);
    cli_quote(nq, sizeof nq, newk.text);
    cli_quote(fq, sizeof fq, a->store_path);
    simdr_store *st = NULL;
    int ret = cli_open_store(a, a->store_path, SIMDR_OPEN_EXISTING, &st);
    if (ret == CLI_OK) {
        rc = simdr_rename(st, oldk.data, oldk.len, newk.data, newk.len, NULL);
        /* Renamed: names that cannot follow (a full disk) are said as such,
         * never as a failed rename. */
        char what[1600];
        snprintf(what, sizeof what, "%s: rename %s to %s", fq, oq, nq);
        if (rc == SIMDR_OK && cli_name_delete(st, oldk.data, oldk.len) != SIMDR_OK)
            cli_err("%s: done, but the old name record stays (%s); compact drops it", what,
                    simdr_last_error());
        if (rc == SIMDR_OK)
            cli_name_put_or_warn(st, newk.data, newk.len, what);
        if (rc == SIMDR_NOTFOUND) {
            cli_err("%s: key %s not found", fq, oq);
            ret = CLI_FAIL;
        } else if (rc == SIMDR_EINVAL && oldk.len == newk.len &&
                   simdr_hash_key(oldk.data, oldk.len) == simdr_hash_key(newk.data, newk.len)) {
            cli_err("%s: rename %s to %s: old and new key are the same", fq, oq, nq);
            ret = CLI_FAIL;
        } else if (rc != SIMDR_OK) {
            ret = cli_fail_simdr(rc, "%s: rename %s to %s", fq, oq, nq);
        } else {
            cli_note(a, "Renamed key %s to %s", oq, nq);
        }
    }
    int crc = cli_close_store(st, a->store_path);
    cli_key_free(&oldk);
    cli_key_free(&newk);
    return ret != CLI_OK ? ret : crc;
}
