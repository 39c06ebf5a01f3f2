/*
 * cmd_info.c - commands that describe a store without changing it: info
 * (the file), metadata (one entry) and list/dump (every live entry). Text
 * output keeps the Rust tool's labels so people and scripts that know it
 * find the same lines; --json gives the same fields with snake_case names.
 * All of them open the store read-only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define RULE_WIDTH 50

/* The Rust tool's "{:=^50}" title line, preceded by a blank line. */
static void out_title(const char *title) {
    size_t n = strlen(title);
    size_t pad = n < RULE_WIDTH ? RULE_WIDTH - n : 0;
    char line[RULE_WIDTH + 64];
    size_t o = 0;
    line[o++] = '\n';
    for (size_t i = 0; i < pad / 2; i++)
        line[o++] = '=';
    memcpy(line + o, title, n);
    o += n;
    for (size_t i = 0; i < pad - pad / 2; i++)
        line[o++] = '=';
    line[o++] = '\n';
    cli_out_write(line, o);
}

static void out_rule(char c) {
    char line[RULE_WIDTH + 1];
    memset(line, c, RULE_WIDTH);
    line[RULE_WIDTH] = '\n';
    cli_out_write(line, sizeof line);
}

/* "LABEL:" left-aligned in 25 columns, as "{:<25}" does. */
static void out_label(const char *label) { cli_out_printf("%-25s ", label); }

static const char *layout_text(int layout) {
    return layout == SIMDR_LAYOUT_UNALIGNED
               ? "unaligned (no padding; simd-r-drive <= 0.13)"
               : "aligned64 (payloads on 64-byte offsets; simd-r-drive >= 0.15)";
}

/* Size text in the Rust tool's units, with the exact count when rounded. */
static void out_size(uint64_t bytes) {
    char h[32];
    cli_format_bytes(h, sizeof h, bytes);
    if (bytes >= 1024)
        cli_out_printf("%s (%" PRIu64 " bytes)\n", h, bytes);
    else
        cli_out_printf("%s\n", h);
}

/* ------------------------------------------------------------------------ */
/* info                                                                      */
/* ------------------------------------------------------------------------ */

int cmd_info(const struct cli_args *a) {
    simdr_store *st = NULL;
    simdr_options opts;
    simdr_options_init(&opts);
    opts.open_mode = SIMDR_OPEN_READONLY;
    int ret = cli_open_store_reporting_tail(a, a->store_path, &opts, &st);
    if (ret != CLI_OK)
        return ret;
    uint64_t size = simdr_file_size(st);
    /* Name records are entries of the file but not values: they are counted
     * apart. */
    struct cli_names *names = NULL;
    int nrc = cli_names_load(st, &names);
    if (nrc != SIMDR_OK) {
        char fq[512];
        cli_quote(fq, sizeof fq, a->store_path);
        ret = cli_fail_simdr(nrc, "%s: reading key names", fq);
        cli_close_store(st, a->store_path);
        return ret;
    }
    uint64_t records = cli_names_records(names), named = cli_names_live(names, st);
    cli_names_free(names);
    uint64_t count = simdr_count(st) - records;
    uint64_t savings = simdr_compaction_savings(st);
    uint64_t tail, zeros;
    cli_ignored_tail(st, &tail, &zeros);
    int layout = simdr_layout_of(st);
    const char *path = a->store_path;
    if (a->json) {
        cli_out_write("{\"storage_file\":", 16);
        cli_out_json_string(path, strlen(path));
        cli_out_printf(",\"total_size\":%" PRIu64 ",\"active_entries\":%" PRIu64
                       ",\"named_entries\":%" PRIu64 ",\"name_records\":%" PRIu64
                       ",\"compaction_savings\":%" PRIu64 ",\"layout\":\"%s\""
                       ",\"ignored_tail_bytes\":%" PRIu64 ",\"zero_tail_bytes\":%" PRIu64 "}\n",
                       size, count, named, records, savings, cli_layout_name(layout), tail, zeros);
    } else {
        out_title(" STORAGE INFO ");
        out_label("STORAGE FILE:");
        cli_out_json_string(path, strlen(path));
        cli_out_write("\n", 1);
        out_rule('-');
        out_label("TOTAL SIZE:");
        out_size(size);
        out_label("ACTIVE ENTRIES:");
        cli_out_printf("%" PRIu64 "\n", count);
        out_label("KEY NAMES:");
        cli_out_printf("%" PRIu64 " of them named (written by this tool; see 'list')\n", named);
        out_label("COMPACTION SAVINGS:");
        out_size(savings);
        out_label("LAYOUT:");
        cli_out_printf("%s\n", layout_text(layout));
        if (tail) {
            out_label("IGNORED TAIL:");
            cli_out_printf("%" PRIu64 " bytes after the last valid entry (a torn final write, "
                           "or damage: run 'check')\n", tail);
        }
        if (zeros) {
            out_label("ZERO TAIL:");
            cli_out_printf("%" PRIu64 " zero bytes after the last entry (no entry; the next "
                           "writable command cuts them)\n", zeros);
        }
        out_rule('=');
    }
    return cli_close_store(st, a->store_path);
}

/* ------------------------------------------------------------------------ */
/* metadata KEY                                                              */
/* ------------------------------------------------------------------------ */

int cmd_metadata(const struct cli_args *a) {
    struct cli_key key;
    int rc = cli_key_from_arg(a, a->argv[0], &key);
    if (rc != CLI_OK)
        return rc;
    simdr_store *st = NULL;
    simdr_entry *e = NULL;
    /* The entry is shown even when its value is damaged: checksum_valid
     * below says so, rather than the read refusing it. */
    simdr_options opts;
    simdr_options_init(&opts);
    opts.open_mode = SIMDR_OPEN_READONLY;
    opts.verify_reads = 0;
    int ret = cli_open_store_opts(a, a->store_path, &opts, &st);
    if (ret != CLI_OK)
        goto done;
    rc = simdr_get(st, key.data, key.len, &e);
    if (rc != SIMDR_OK) {
        char q[512], fq[512];
        cli_quote(q, sizeof q, key.text);
        cli_quote(fq, sizeof fq, a->store_path);
        ret = rc == SIMDR_NOTFOUND ? (cli_err("%s: key %s not found", fq, q), CLI_FAIL)
                                   : cli_fail_simdr(rc, "%s: metadata of %s", fq, q);
        goto done;
    }
    uint64_t size = simdr_entry_size(e);
    uint64_t off = simdr_entry_offset(e);
    uint64_t hash = simdr_entry_key_hash(e);
    uint32_t crc = simdr_entry_checksum(e);
    /* The full CRC pass reads the whole value: that is what the field means. */
    int valid = simdr_entry_verify(e) == SIMDR_OK;
    uint64_t estart = simdr_entry_start(e), eend = simdr_entry_end(e);
    int layout = simdr_layout_of(st);
    if (a->json) {
        cli_out_write("{\"storage_file\":", 16);
        cli_out_json_string(a->store_path, strlen(a->store_path));
        cli_out_write(",\"key\":", 7);
        cli_out_json_string(key.data, key.len);
        cli_out_write(",\"key_hex\":\"", 12);
        cli_out_hex(key.data, key.len);
        cli_out_printf("\",\"payload_size\":%" PRIu64 ",\"total_size_with_metadata\":%" PRIu64
                       ",\"offset_range\":{\"start\":%" PRIu64 ",\"end\":%" PRIu64 "}"
                       ",\"key_hash\":\"%016" PRIx64 "\",\"checksum\":%" PRIu32
                       ",\"checksum_hex\":\"%08" PRIx32 "\",\"checksum_valid\":%s"
                       ",\"prev_offset\":%" PRIu64 ",\"entry_end\":%" PRIu64
                       ",\"layout\":\"%s\"}\n",
                       size, size + 20, off, off + size, hash, crc, crc, valid ? "true" : "false",
                       estart, eend, cli_layout_name(layout));
    } else {
        out_title(" METADATA SUMMARY ");
        out_label("ENTRY FOR:");
        cli_out_json_string(key.text, strlen(key.text));
        cli_out_write("\n", 1);
        out_rule('-');
        out_label("PAYLOAD SIZE:");
        cli_out_printf("%" PRIu64 " bytes\n", size);
        out_label("TOTAL SIZE (W/ METADATA):");
        cli_out_printf("%" PRIu64 " bytes\n", size + 20);
        out_label("OFFSET RANGE:");
        cli_out_printf("%" PRIu64 "..%" PRIu64 "\n", off, off + size);
        out_label("KEY HASH:");
        cli_out_printf("%" PRIu64 " (0x%016" PRIx64 ")\n", hash, hash);
        out_label("CHECKSUM:");
        cli_out_printf("%" PRIu32 " (0x%08" PRIx32 ")\n", crc, crc);
        out_label("CHECKSUM VALIDITY:");
        cli_out_printf("%s\n", valid ? "VALID" : "INVALID");
        out_rule('-');
        out_label("STORED METADATA:");
        cli_out_printf("key_hash=0x%016" PRIx64 " prev_offset=%" PRIu64 " checksum=0x%08" PRIx32
                       "\n",
                       hash, estart, crc);
        out_label("ENTRY RANGE:");
        cli_out_printf("%" PRIu64 "..%" PRIu64 " (padding, payload and metadata)\n", estart, eend);
        out_label("LAYOUT:");
        cli_out_printf("%s\n", layout_text(layout));
        out_rule('=');
    }
done:
    simdr_entry_release(e);
    int crc_close = cli_close_store(st, a->store_path);
    cli_key_free(&key);
    return ret != CLI_OK ? ret : crc_close;
}

/* ------------------------------------------------------------------------ */
/* list / dump                                                               */
/* ------------------------------------------------------------------------ */

/* The file stores only key hashes; keys written through this tool also have
 * a name record (names.c), shown beside the hash. Name records themselves
 * are not listed. Iteration order is the library's: newest entries first. */
int cmd_list(const struct cli_args *a) {
    simdr_store *st = NULL;
    int ret = cli_open_store(a, a->store_path, SIMDR_OPEN_READONLY, &st);
    if (ret != CLI_OK)
        return ret;
    char fq[512];
    cli_quote(fq, sizeof fq, a->store_path);
    struct cli_names *names = NULL;
    simdr_iter *it = NULL;
    int rc = cli_names_load(st, &names);
    if (rc == SIMDR_OK)
        rc = simdr_iter_open(st, &it);
    if (rc != SIMDR_OK) {
        ret = cli_fail_simdr(rc, "%s: listing entries", fq);
        cli_names_free(names);
        cli_close_store(st, a->store_path);
        return ret;
    }
    if (a->json)
        cli_out_write("[", 1);
    uint64_t n = 0, damaged = 0;
    const simdr_entry *e;
    while (!cli_out_broken() && (rc = simdr_iter_next(it, &e)) != SIMDR_NOTFOUND) {
        if (rc == SIMDR_ECORRUPT) {
            /* The iterator has moved past the damaged entry: the other
             * keys are still listed, and the exit status says it. */
            cli_fail_simdr(rc, "%s: listing entries", fq);
            damaged++;
            continue;
        }
        if (rc != SIMDR_OK)
            break;
        uint64_t h = simdr_entry_key_hash(e), off = simdr_entry_offset(e), sz = simdr_entry_size(e);
        uint64_t named_hash;
        const void *name;
        size_t nlen;
        if (cli_name_record_parse(e, &named_hash, &name, &nlen))
            continue;
        int has_name = cli_names_find(names, h, &name, &nlen);
        int from_server = !has_name && cli_server_record_key(e, &name, &nlen);
        has_name |= from_server;
        if (a->json) {
            cli_out_printf("%s\n{\"key_hash\":\"%016" PRIx64 "\",\"offset\":%" PRIu64
                           ",\"size\":%" PRIu64,
                           n ? "," : "", h, off, sz);
            if (has_name) {
                cli_out_write(",\"key\":", 7);
                cli_out_json_string(name, nlen);
                cli_out_write(",\"key_hex\":\"", 12);
                cli_out_hex(name, nlen);
                cli_out_write("\"", 1);
                if (from_server)
                    cli_out_printf(",\"name_source\":\"server record\"");
            }
            cli_out_write("}", 1);
        } else {
            cli_out_printf("%016" PRIx64 " %" PRIu64 " %" PRIu64, h, off, sz);
            if (has_name) {
                cli_out_write(" ", 1);
                cli_out_name(name, nlen);
            }
            cli_out_write("\n", 1);
        }
        n++;
    }
    if (rc != SIMDR_OK && rc != SIMDR_NOTFOUND && !cli_out_broken())
        ret = cli_fail_simdr(rc, "%s: listing entries", fq);
    if (damaged) {
        cli_err("%s: %" PRIu64 " damaged %s not listed (run 'check')", fq, damaged,
                cli_plural(damaged, "entry", "entries"));
        ret = CLI_FAIL;
    }
    if (a->json)
        cli_out_write("\n]\n", 3);
    simdr_iter_close(it);
    cli_names_free(names);
    int crc = cli_close_store(st, a->store_path);
    return ret != CLI_OK ? ret : crc;
}
