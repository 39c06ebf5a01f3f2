/*
 * cmd_maint.c - maintenance commands: compact (rewrite the file with only
 * the live entries) and check (verify every entry's chain link and CRC
 * without changing anything; the exit status says whether the file is sound).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* ------------------------------------------------------------------------ */
/* compact                                                                   */
/* ------------------------------------------------------------------------ */

int cmd_compact(const struct cli_args *a) {
    char fq[512];
    cli_quote(fq, sizeof fq, a->store_path);
    simdr_store *st = NULL;
    /* The compaction checks every copied value's checksum itself; reads of
     * values, which only the look for stale names makes, need not (they
     * would read the whole file once more before the compaction does). */
    simdr_options opts;
    simdr_options_init(&opts);
    opts.open_mode = SIMDR_OPEN_EXISTING;
    opts.verify_reads = 0;
    int ret = cli_open_store_opts(a, a->store_path, &opts, &st);
    if (ret != CLI_OK)
        return ret;
    uint64_t before = simdr_file_size(st), orphans = 0;
    /* Names of keys another program deleted: list and export pass over them,
     * and only the tool deletes them, so they go before the compaction. */
    int nrc = cli_names_drop_orphans(st, &orphans);
    if (nrc != SIMDR_OK)
        cli_fail_simdr(nrc, "%s: dropping the names of deleted keys (compacting anyway)", fq);
    char label[600];
    snprintf(label, sizeof label, "compacting %s", fq);
    /* The library reports no progress; the new file it writes beside the
     * store grows to the size the compaction will leave, so its size over
     * that is the share done. */
    char watch[4200];
    snprintf(watch, sizeof watch, "%s.compact", simdr_path(st)); /* a link's target */
    struct cli_ticker *t =
        cli_ticker_start_file(label, watch, before - simdr_compaction_savings(st));
    int rc = simdr_compact(st);
    cli_ticker_end(t);
    if (rc != SIMDR_OK) {
        ret = cli_fail_simdr(rc, "%s: compaction failed", fq);
    } else {
        uint64_t after = simdr_file_size(st);
        char b[32], f[32];
        cli_format_bytes(b, sizeof b, before);
        cli_format_bytes(f, sizeof f, after);
        cli_note(a, "Compacted %s: %s -> %s (%" PRIu64 " bytes freed)", fq, b, f,
                 before > after ? before - after : 0);
    }
    int crc = cli_close_store(st, a->store_path);
    return ret != CLI_OK ? ret : crc;
}

/* ------------------------------------------------------------------------ */
/* check                                                                     */
/* ------------------------------------------------------------------------ */

struct check_ctx {
    const struct cli_args *a;
    uint64_t issues;
    uint64_t tail_from, tail_to; /* the unreadable tail, reported apart */
    int tail_seen;
};

static int on_issue(void *ctx, const simdr_check_issue *is) {
    struct check_ctx *c = ctx;
    /* The bytes after the valid chain are one report, UNREADABLE TAIL (and
     * ignored_tail_bytes), not also an issue and a bad entry. */
    if (c->tail_to > c->tail_from && is->offset == c->tail_from && is->end == c->tail_to &&
        is->key_hash == 0 && is->code != SIMDR_ECHECKSUM) {
        c->tail_seen = 1;
        return cli_out_broken();
    }
    const char *kind = is->code == SIMDR_ECHECKSUM ? "checksum" : "corrupt";
    const char *what = is->what ? is->what : simdr_strerror(is->code);
    if (c->a->json) {
        cli_out_printf("%s\n{\"offset\":%" PRIu64 ",\"end\":%" PRIu64 ",\"key_hash\":\"%016" PRIx64
                       "\",\"problem\":\"%s\",\"what\":",
                       c->issues ? "," : "", is->offset, is->end, is->key_hash, kind);
        cli_out_json_string(what, strlen(what));
        cli_out_write("}", 1);
    } else if (is->key_hash != 0 || is->code == SIMDR_ECHECKSUM) {
        cli_out_printf("BAD ENTRY at offset %" PRIu64 "..%" PRIu64 " (key hash %016" PRIx64
                       "): %s: %s\n",
                       is->offset, is->end, is->key_hash, kind, what);
    } else {
        /* a byte range the library could not attribute to one entry */
        cli_out_printf("BAD DATA at offset %" PRIu64 "..%" PRIu64 ": %s: %s\n", is->offset, is->end,
                       kind, what);
    }
    c->issues++;
    /* Keep going: the point is to list every bad entry. A closed stdout
     * stops the scan, as nobody reads the rest. */
    return cli_out_broken();
}

int cmd_check(const struct cli_args *a) {
    char fq[512];
    cli_quote(fq, sizeof fq, a->store_path);
    simdr_store *st = NULL;
    /* Read-only: a check never repairs or truncates anything. Salvage, so a
     * store damaged in the middle opens to its sound prefix and the check
     * reports on the whole file instead of refusing to look at it. */
    simdr_options opts;
    simdr_options_init(&opts);
    opts.open_mode = SIMDR_OPEN_READONLY;
    opts.salvage = 1;
    int ret = cli_open_store_reporting_tail(a, a->store_path, &opts, &st);
    if (ret != CLI_OK)
        return ret;
    uint64_t tail, zeros, valid = simdr_file_size(st);
    /* A tail of zeros only held no entry: reported, but the file is sound. */
    cli_ignored_tail(st, &tail, &zeros);
    struct check_ctx c = {a, 0, valid, valid + tail, 0};
    simdr_check_report rep;
    memset(&rep, 0, sizeof rep);
    if (a->json) {
        cli_out_write("{\"storage_file\":", 16);
        cli_out_json_string(a->store_path, strlen(a->store_path));
        cli_out_write(",\"issues\":[", 11);
    }
    char label[600];
    snprintf(label, sizeof label, "checking %s", fq);
    struct cli_ticker *t = cli_ticker_start(label);
    int rc = simdr_check(st, on_issue, &c, &rep);
    cli_ticker_end(t);
    int sound = rc == SIMDR_OK && tail == 0;
    uint64_t bad = rep.bad_entries - (c.tail_seen && rep.bad_entries ? 1 : 0);
    if (rc != SIMDR_OK && rc != SIMDR_ECORRUPT && !(rc == SIMDR_ESTOPPED && cli_out_broken())) {
        if (a->json)
            cli_out_write("]}\n", 3);
        ret = cli_fail_simdr(rc, "%s: check failed", fq);
        cli_close_store(st, a->store_path);
        return ret;
    }
    if (a->json) {
        cli_out_printf("%s],\"sound\":%s,\"entries\":%" PRIu64 ",\"bad_entries\":%" PRIu64
                       ",\"bytes_checked\":%" PRIu64 ",\"valid_size\":%" PRIu64
                       ",\"ignored_tail_bytes\":%" PRIu64 ",\"zero_tail_bytes\":%" PRIu64 "}\n",
                       c.issues ? "\n" : "", sound ? "true" : "false", rep.entries, bad,
                       rep.bytes_checked, valid, tail, zeros);
    } else {
        if (zeros)
            cli_out_printf("ZERO TAIL: %" PRIu64 " zero bytes after offset %" PRIu64
                           " hold no entry (space a writer allocated ahead of its last entry, "
                           "or a length that reached the disk before its data); the next "
                           "writable command cuts them\n",
                           zeros, valid);
        if (tail)
            cli_out_printf("UNREADABLE TAIL: %" PRIu64 " bytes after offset %" PRIu64
                           " are not complete, valid entries (a torn final write is cut by the "
                           "next writable command and saved beside the file; other damage makes "
                           "writable commands refuse the file)\n",
                           tail, valid);
        cli_out_printf("%s: %" PRIu64 " %s, %" PRIu64 " bytes checked, %" PRIu64 " bad %s%s%s: %s\n",
                       a->store_path, rep.entries, cli_plural(rep.entries, "entry", "entries"),
                       rep.bytes_checked, bad, cli_plural(bad, "entry", "entries"),
                       tail ? ", an unreadable tail" : "", zeros ? ", a zero tail" : "",
                       sound ? "OK" : "DAMAGED");
    }
    ret = sound ? CLI_OK : CLI_FAIL;
    int crc = cli_close_store(st, a->store_path);
    return ret != CLI_OK ? ret : crc;
}
