/*
 * cmd_read_write.c - the read, write and delete commands, and the two
 * streaming helpers they share with import/export: a value goes out in
 * chunks straight from the file map (never copied whole into memory), and a
 * value comes in from a descriptor in constant memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* ------------------------------------------------------------------------ */
/* Shared streaming helpers                                                  */
/* ------------------------------------------------------------------------ */

/* ---- interruption of a streaming write ---------------------------------- */

/* While a value streams in, SIGINT, SIGTERM and SIGHUP only set this flag:
 * the source then fails, the library drops the half-written value, and
 * main() ends the process with the same signal afterwards. Killed outright
 * instead, the tool would leave the appended bytes as a torn tail that
 * 'check' reports as damage until the next writer cuts it. */
static volatile sig_atomic_t interrupted_by;

static void note_interrupt(int sig) { interrupted_by = sig; }

static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};

void cli_interrupts_catch(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = note_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocked read of stdin returns EINTR */
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        sigaction(stop_signals[i], &sa, NULL);
}

int cli_interrupted(void) { return interrupted_by; }

void cli_interrupts_finish(void) {
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        signal(stop_signals[i], SIG_DFL);
    if (interrupted_by)
        raise(interrupted_by);
}

struct fd_source {
    int fd;
    uint64_t done;
    int err;
    struct cli_progress *prog;
};

static int64_t fd_source_read(void *ctx, void *buf, size_t cap) {
    struct fd_source *s = ctx;
    for (;;) {
        if (interrupted_by) {
            s->err = EINTR;
            return -1;
        }
        ssize_t n = read(s->fd, buf, cap);
        if (n >= 0) {
            s->done += (uint64_t)n;
            cli_progress_update(s->prog, s->done);
            return n;
        }
        if (cli_wait_ready(s->fd, POLLIN, errno))
            continue;
        if (errno != EINTR) {
            s->err = errno;
            return -1;
        }
    }
}

/* Streams fd into key through a counting source (simdr_put_stream), so a
 * progress bar can follow and an interrupt stops the read. Memory stays
 * constant and a failing source fails the write with nothing kept.
 * *read_errno gets the errno of a failed read (EINTR when interrupted);
 * *bytes_read (if not NULL) what was read, which for a file that changed
 * since it was listed is not its listed size. */
int cli_put_from_fd(simdr_store *st, const void *key, size_t key_len, int fd,
                    struct cli_progress *prog, int *read_errno, uint64_t *bytes_read) {
    *read_errno = 0;
    struct fd_source src = {fd, 0, 0, prog};
    int rc = simdr_put_stream(st, key, key_len, fd_source_read, &src, NULL);
    *read_errno = src.err;
    if (bytes_read)
        *bytes_read = src.done;
    return rc;
}

/* Pages already written out are dropped from memory every DROP_STEP bytes,
 * so a value of any size streams through a bounded resident set. */
#define DROP_STEP ((uint64_t)1 << 20)

/* Writes an entry's bytes to dest (a file descriptor), or to standard output
 * when dest is NULL, chunk bytes at a time, zero-copy from the map. A closed
 * stdout pipe stops the copy quietly (main() decides the exit status); other
 * failures are reported here. */
int cli_write_entry(const simdr_entry *e, int fd, const char *dest, size_t chunk,
                    struct cli_progress *prog) {
    uint64_t size = simdr_entry_size(e);
    uint64_t off = 0, dropped = 0;
    while (off < size) {
        const void *p;
        size_t len;
        if (cli_interrupted())
            return CLI_FAIL; /* the caller says so and cleans up */
        if (off - dropped >= DROP_STEP) {
            /* simdr_entry_chunk drops the whole pages of the max bytes before
             * offset: with max = what was written since the last drop, that
             * is exactly the part of the value consumed since then. */
            simdr_entry_chunk(e, off, (size_t)(off - dropped), &p, &len, 1);
            dropped = off;
        }
        int rc = simdr_entry_chunk(e, off, chunk, &p, &len, 0);
        if (rc != SIMDR_OK)
            return cli_fail_simdr(rc, "reading value at offset %" PRIu64, off);
        if (!dest) {
            if (cli_out_write(p, len) != 0)
                return CLI_OK;
        } else {
            int err = cli_write_all(fd, p, len);
            if (err) {
                cli_err("writing %s: %s", dest, strerror(err));
                return CLI_FAIL;
            }
        }
        off += len;
        cli_progress_update(prog, off);
    }
    return CLI_OK;
}

void cli_explain_refused_value(const char *what) {
    cli_err("%s: value refused: an empty value, the single byte 0x00 and a stream of only zero "
            "bytes cannot be stored (the file format would read them as a delete)",
            what);
}

/* ------------------------------------------------------------------------ */
/* read KEY [--buffer-size SIZE]                                             */
/* ------------------------------------------------------------------------ */

int cmd_read(const struct cli_args *a) {
    struct cli_key key;
    int rc = cli_key_from_arg(a, a->argv[0], &key);
    if (rc != CLI_OK)
        return rc;
    char q[512];
    cli_quote(q, sizeof q, key.text);
    simdr_store *st = NULL;
    simdr_entry *e = NULL;
    int ret = cli_open_store(a, a->store_path, SIMDR_OPEN_READONLY, &st);
    if (ret != CLI_OK)
        goto done;
    rc = simdr_get(st, key.data, key.len, &e);
    if (rc != SIMDR_OK) {
        char fq[512];
        cli_quote(fq, sizeof fq, a->store_path);
        ret = rc == SIMDR_NOTFOUND ? (cli_err("%s: key %s not found", fq, q), CLI_FAIL)
                                   : cli_fail_simdr(rc, "%s: reading key %s", fq, q);
        goto done;
    }
    uint64_t size = simdr_entry_size(e);
    char label[600];
    snprintf(label, sizeof label, "read %s", q);
    struct cli_progress *prog =
        size >= CLI_PROGRESS_MIN ? cli_progress_start(label, size, 0) : NULL;
    ret = cli_write_entry(e, STDOUT_FILENO, NULL, a->buffer_size, prog);
    cli_progress_end(prog);
    /* Like the Rust tool: a newline for a person reading a terminal, never
     * in a pipe or file, so binary values round-trip exactly. */
    if (ret == CLI_OK && isatty(STDOUT_FILENO))
        cli_out_write("\n", 1);
done:
    simdr_entry_release(e);
    int crc = cli_close_store(st, a->store_path);
    cli_key_free(&key);
    return ret != CLI_OK ? ret : crc;
}

/* ------------------------------------------------------------------------ */
/* write KEY [VALUE]                                                         */
/* ------------------------------------------------------------------------ */

int cmd_write(const struct cli_args *a) {
    int from_stdin = a->argc < 2;
    /* Checked before opening so a mistaken command line creates no file. */
    if (from_stdin && isatty(STDIN_FILENO))
        return cli_usage_error("write: no VALUE given and standard input is a terminal "
                               "(give the value as an argument or pipe it in)");
    struct cli_key key;
    int rc = cli_key_from_arg(a, a->argv[0], &key);
    if (rc != CLI_OK)
        return rc;
    char q[512], fq[512], what[1100];
    cli_quote(q, sizeof q, key.text);
    cli_quote(fq, sizeof fq, a->store_path);
    snprintf(what, sizeof what, "%s: write %s", fq, q);
    if (!from_stdin && a->argv[1][0] == '\0') {
        cli_explain_refused_value(what);
        cli_key_free(&key);
        return CLI_FAIL;
    }
    /* "write KEY < STORE": the input would grow by every chunk appended and
     * never end, until the disk is full. */
    struct stat in_sb, store_sb;
    if (from_stdin && fstat(STDIN_FILENO, &in_sb) == 0 && stat(a->store_path, &store_sb) == 0 &&
        in_sb.st_dev == store_sb.st_dev && in_sb.st_ino == store_sb.st_ino) {
        cli_err("%s: standard input is the store file itself (the value would grow with every "
                "chunk written and never end); nothing was stored",
                what);
        cli_key_free(&key);
        return CLI_FAIL;
    }
    simdr_store *st = NULL;
    int created = 0;
    int ret = cli_open_store_created(a, a->store_path, SIMDR_OPEN_CREATE, &st, &created);
    if (ret != CLI_OK)
        goto done;
    int read_errno = 0;
    if (!from_stdin) {
        const char *v = a->argv[1];
        rc = cli_put_named(st, key.data, key.len, v, strlen(v));
    } else {
        struct stat sb;
        uint64_t total = fstat(STDIN_FILENO, &sb) == 0 && S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
        char label[600];
        snprintf(label, sizeof label, "write %s", q);
        struct cli_progress *prog = cli_progress_start(label, total, CLI_PROGRESS_MIN);
        cli_interrupts_catch();
        rc = cli_put_from_fd(st, key.data, key.len, STDIN_FILENO, prog, &read_errno, NULL);
        cli_progress_end(prog);
        /* The value is stored: a name that cannot follow it (a full disk)
         * is said as such, never as a failed write. */
        if (rc == SIMDR_OK)
            cli_name_put_or_warn(st, key.data, key.len, what);
    }
    if (rc == SIMDR_EINVAL) {
        cli_explain_refused_value(what);
        ret = CLI_FAIL;
    } else if (rc == SIMDR_ESOURCE && cli_interrupted()) {
        cli_err("%s: interrupted (nothing was stored)", what);
        ret = CLI_FAIL;
    } else if (rc == SIMDR_ESOURCE && read_errno) {
        cli_err("%s: reading standard input: %s (nothing was stored)", what, strerror(read_errno));
        ret = CLI_FAIL;
    } else if (rc != SIMDR_OK) {
        ret = cli_fail_simdr(rc, "%s", what);
    } else {
        simdr_entry *e = NULL;
        if (simdr_get(st, key.data, key.len, &e) == SIMDR_OK)
            cli_note(a, "Stored %s (%" PRIu64 " %s)", q, simdr_entry_size(e),
                     cli_plural(simdr_entry_size(e), "byte", "bytes"));
        else
            cli_note(a, "Stored %s", q);
        simdr_entry_release(e);
    }
done:;
    int crc = cli_close_store_created(st, a->store_path, created, ret != CLI_OK);
    cli_key_free(&key);
    return ret != CLI_OK ? ret : crc;
}

/* ------------------------------------------------------------------------ */
/* delete KEY                                                                */
/* ------------------------------------------------------------------------ */

int cmd_delete(const struct cli_args *a) {
    struct cli_key key;
    int rc = cli_key_from_arg(a, a->argv[0], &key);
    if (rc != CLI_OK)
        return rc;
    char q[512], fq[512];
    cli_quote(q, sizeof q, key.text);
    cli_quote(fq, sizeof fq, a->store_path);
    simdr_store *st = NULL;
    /* An existing store only: deleting from a file that is not there must
     * not leave a new empty store behind. */
    int ret = cli_open_store(a, a->store_path, SIMDR_OPEN_EXISTING, &st);
    if (ret == CLI_OK) {
        rc = cli_delete_named(st, key.data, key.len);
        if (rc == SIMDR_NOTFOUND) {
            cli_err("%s: key %s not found", fq, q);
            ret = CLI_FAIL;
        } else if (rc != SIMDR_OK) {
            ret = cli_fail_simdr(rc, "%s: delete %s", fq, q);
        } else {
            cli_note(a, "Deleted key %s", q);
        }
    }
    int crc = cli_close_store(st, a->store_path);
    cli_key_free(&key);
    return ret != CLI_OK ? ret : crc;
}
