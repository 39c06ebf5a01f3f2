/*
 * util.c - what every simd-r-drive command shares: buffered standard output
 * that treats a closed pipe as a quiet end, one-line error messages built
 * from the library's status and last-error text, quoting for keys and paths,
 * JSON string output, human-readable sizes, and opening/closing a store.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* ------------------------------------------------------------------------ */
/* Standard output                                                           */
/* ------------------------------------------------------------------------ */

/* Our own buffer instead of stdio: it keeps the errno of a failed write (so a
 * closed pipe is told apart from a full disk) and lets large values bypass
 * the copy into a buffer. */
static char out_buf[64 * 1024];
static size_t out_used;
static int out_errno; /* sticky: first write error on stdout, 0 if none */

/* A descriptor the tool was handed in non-blocking mode (O_NONBLOCK is a
 * property of the description its starter shares: node, some CI runners)
 * answers EAGAIN when no data or no room is there yet; that is a wait, not
 * a failure. 1 when err was EAGAIN and the wait ended (retry the call), 0
 * with errno set otherwise (EINTR: a signal came; the caller looks). */
int cli_wait_ready(int fd, short events, int err) {
    if (err != EAGAIN && err != EWOULDBLOCK) {
        errno = err;
        return 0;
    }
    struct pollfd pfd = {fd, events, 0};
    return poll(&pfd, 1, -1) >= 0;
}

int cli_write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (cli_wait_ready(fd, POLLOUT, errno))
                continue;
            if (errno == EINTR && !cli_interrupted())
                continue;
            return errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int cli_out_flush(void) {
    if (out_errno)
        return -1;
    int e = cli_write_all(STDOUT_FILENO, out_buf, out_used);
    out_used = 0;
    if (e) {
        out_errno = e;
        return -1;
    }
    return 0;
}

int cli_out_write(const void *buf, size_t len) {
    if (out_errno)
        return -1;
    if (len > sizeof out_buf - out_used) {
        if (cli_out_flush() != 0)
            return -1;
        if (len >= sizeof out_buf) {
            int e = cli_write_all(STDOUT_FILENO, buf, len);
            if (e) {
                out_errno = e;
                return -1;
            }
            return 0;
        }
    }
    memcpy(out_buf + out_used, buf, len);
    out_used += len;
    return 0;
}

int cli_out_printf(const char *fmt, ...) {
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return cli_out_write(small, (size_t)n);
    /* rare: a line longer than the stack buffer (long paths in JSON) */
    char big[(size_t)8 * 1024];
    va_start(ap, fmt);
    n = vsnprintf(big, sizeof big, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    return cli_out_write(big, (size_t)n < sizeof big ? (size_t)n : sizeof big - 1);
}

int cli_out_broken(void) { return out_errno != 0; }

/* Called once by main(): a reader that went away (EPIPE) is a normal end and
 * changes nothing; any other output failure (disk full, I/O error) fails. */
int cli_out_finish(void) {
    cli_out_flush();
    if (out_errno == 0 || out_errno == EPIPE)
        return CLI_OK;
    cli_err("write error on standard output: %s", strerror(out_errno));
    return CLI_FAIL;
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */
/* ------------------------------------------------------------------------ */

void cli_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cli_progress_clear_line();
    fputs("simd-r-drive: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void cli_note(const struct cli_args *a, const char *fmt, ...) {
    if (a->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    cli_progress_clear_line();
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* One line: what was being done and why, each said once. The library's
 * message names the file and usually says the status in its own words
 * ("f.bin: not a simd-r-drive store (...)"): a file name the line already
 * gives is dropped from it, and the status text is added only when the
 * message does not say it. "Not found" is cheap in the library and sets no
 * message, so an older one is never shown. */
int cli_fail_simdr(int code, const char *fmt, ...) {
    char what[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *status = simdr_strerror(code);
    const char *detail = code == SIMDR_NOTFOUND ? NULL : simdr_last_error();
    if (detail && detail[0]) {
        const char *colon = strstr(detail, ": ");
        if (colon && colon > detail) {
            char name[1024];
            size_t n = (size_t)(colon - detail);
            if (n < sizeof name) {
                memcpy(name, detail, n);
                name[n] = '\0';
                if (strstr(what, name))
                    detail = colon + 2;
            }
        }
    }
    /* "store is locked by another process" + "locked by another process that
     * has it open for writing": the detail continues the status's last words,
     * so they are said once: "store is locked by another process that ..." */
    size_t lead = 0;
    int continues = 0;
    for (size_t k = 0; detail && status[k] && !continues; k++) {
        if (k > 0 && status[k - 1] != ' ')
            continue;
        size_t rest = strlen(status + k);
        if (rest >= 10 && strncmp(detail, status + k, rest) == 0) {
            lead = k;
            continues = 1;
        }
    }
    cli_progress_clear_line();
    if (continues)
        fprintf(stderr, "simd-r-drive: %s: %.*s%s\n", what, (int)lead, status, detail);
    else if (!detail || !detail[0])
        fprintf(stderr, "simd-r-drive: %s: %s\n", what, status);
    else if (strstr(detail, status))
        fprintf(stderr, "simd-r-drive: %s: %s\n", what, detail);
    else
        fprintf(stderr, "simd-r-drive: %s: %s (%s)\n", what, status, detail);
    return CLI_FAIL;
}

int cli_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("simd-r-drive: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'simd-r-drive --help' for more information.\n", stderr);
    return CLI_USAGE;
}

static size_t shown_as_is(const unsigned char *s, size_t n);

/* 'text' with control bytes, C1 controls and bytes that are not UTF-8 shown
 * as \xNN, so a key or path with odd bytes cannot garble the terminal.
 * Truncated with "..." if longer than cap. */
void cli_quote(char *dst, size_t cap, const char *src) { cli_quote_bytes(dst, cap, src, strlen(src)); }

void cli_quote_bytes(char *dst, size_t cap, const void *src, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap < 8) {
        if (cap)
            dst[0] = '\0';
        return;
    }
    dst[o++] = '\'';
    const unsigned char *s = src;
    size_t left = len;
    while (left > 0) {
        size_t n = shown_as_is(s, left);
        if (o + 8 + n >= cap) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (n == 0) {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[*s >> 4];
            dst[o++] = hex[*s & 15];
            n = 1;
        } else {
            memcpy(dst + o, s, n);
            o += n;
        }
        s += n;
        left -= n;
    }
    dst[o++] = '\'';
    dst[o] = '\0';
}

/* The Rust tool's format_bytes: two decimals in KB/MB/GB (powers of 1024),
 * plain bytes below 1 KB. */
void cli_format_bytes(char *dst, size_t cap, uint64_t bytes) {
    const uint64_t kb = 1024, mb = kb * 1024, gb = mb * 1024;
    if (bytes >= gb)
        snprintf(dst, cap, "%.2f GB", (double)bytes / (double)gb);
    else if (bytes >= mb)
        snprintf(dst, cap, "%.2f MB", (double)bytes / (double)mb);
    else if (bytes >= kb)
        snprintf(dst, cap, "%.2f KB", (double)bytes / (double)kb);
    else
        snprintf(dst, cap, "%" PRIu64 " %s", bytes, bytes == 1 ? "byte" : "bytes");
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string. Bytes that are not valid UTF-8 become U+FFFD; callers that
 * need the exact bytes also emit a hex field. */
void cli_out_json_string(const void *str, size_t len) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = str;
    cli_out_write("\"", 1);
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            cli_out_write(e, 2);
            i++;
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            cli_out_write(e, 6);
            i++;
        } else {
            size_t n = utf8_seq(s + i, len - i);
            if (n == 0) {
                cli_out_write("\\ufffd", 6);
                i++;
            } else {
                cli_out_write(s + i, n);
                i += n;
            }
        }
    }
    cli_out_write("\"", 1);
}

/* How many bytes at s a terminal may be shown as they are: a printable
 * ASCII byte or a valid UTF-8 sequence that is not a C1 control (U+0080 to
 * U+009F, which some terminals obey like ESC). 0: show s[0] as \xNN. */
static size_t shown_as_is(const unsigned char *s, size_t n) {
    if (s[0] < 0x20 || s[0] == 0x7f)
        return 0;
    size_t len = utf8_seq(s, n);
    if (len == 2 && s[0] == 0xc2 && s[1] < 0xa0)
        return 0;
    return len;
}

void cli_out_name(const void *name, size_t len) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = name;
    size_t i = 0;
    while (i < len) {
        size_t n = s[i] == '\\' ? 0 : shown_as_is(s + i, len - i);
        if (n == 0) {
            char e[4] = {'\\', 'x', hex[s[i] >> 4], hex[s[i] & 15]};
            cli_out_write(e, 4);
            i++;
        } else {
            cli_out_write(s + i, n);
            i += n;
        }
    }
}

void cli_out_hex(const void *str, size_t len) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = str;
    char buf[128];
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (o + 2 > sizeof buf) {
            cli_out_write(buf, o);
            o = 0;
        }
        buf[o++] = hex[s[i] >> 4];
        buf[o++] = hex[s[i] & 15];
    }
    cli_out_write(buf, o);
}

const char *cli_plural(uint64_t n, const char *one, const char *many) {
    return n == 1 ? one : many;
}

const char *cli_layout_name(int layout) {
    return layout == SIMDR_LAYOUT_UNALIGNED ? "unaligned" : "aligned64";
}

/* ------------------------------------------------------------------------ */
/* Opening a store                                                           */
/* ------------------------------------------------------------------------ */

/* Says what is wrong with a store path before the library is asked: a
 * directory, a missing parent directory, a missing file where one must
 * exist. The same words for every command. Returns CLI_OK when the path can
 * be handed to simdr_open. */
static int check_store_path(const char *path, const char *q, int mode, int *exists) {
    struct stat sb;
    *exists = 0;
    if (!*path) {
        cli_err("cannot open %s: the path is empty", q);
        return CLI_FAIL;
    }
    if (stat(path, &sb) == 0) {
        *exists = 1;
        if (S_ISDIR(sb.st_mode)) {
            cli_err("cannot open %s: it is a directory, not a store file", q);
            return CLI_FAIL;
        }
        return CLI_OK;
    }
    if (errno == ENOTDIR) {
        cli_err("cannot open %s: a part of the path before the file name is not a directory", q);
        return CLI_FAIL;
    }
    if (errno != ENOENT)
        return CLI_OK; /* permission and the like: the library says it */
    char parent[4096];
    const char *slash = strrchr(path, '/');
    if (slash && (size_t)(slash - path) < sizeof parent) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(parent, path, n);
        parent[n] = '\0';
        if (stat(parent, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            char pq[512];
            cli_quote(pq, sizeof pq, parent);
            cli_err("cannot open %s: directory %s does not exist", q, pq);
            return CLI_FAIL;
        }
    }
    if (mode != SIMDR_OPEN_CREATE) {
        cli_err("cannot open %s: file does not exist", q);
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* Opens path with opts (the command line's --layout applied) and tells the
 * user on stderr what recovery did: a torn final append that a writable open
 * cut (and saved), and, with note_tail, what a read-only open skipped
 * without touching the file. */
static int open_store(const struct cli_args *a, const char *path, const simdr_options *opts,
                      simdr_store **out, int note_tail) {
    simdr_options o = *opts;
    if (a->layout >= 0)
        o.layout = a->layout;
    *out = NULL;
    char q[512];
    cli_quote(q, sizeof q, path);
    int exists = 0;
    if (check_store_path(path, q, o.open_mode, &exists) != CLI_OK)
        return CLI_FAIL;
    int rc = simdr_open(out, path, &o);
    if (rc != SIMDR_OK) {
        *out = NULL;
        return cli_fail_simdr(rc, "cannot open %s", q);
    }
    if (exists && a->layout >= 0 && simdr_file_size(*out) > 0 && simdr_layout_of(*out) != a->layout)
        cli_err("%s: --layout %s ignored: the store already uses the %s layout", q,
                cli_layout_name(a->layout), cli_layout_name(simdr_layout_of(*out)));
    simdr_recovery_info ri;
    if (simdr_recovery(*out, &ri) == SIMDR_OK && ri.bytes_cut > 0 && (note_tail || ri.truncated)) {
        if (ri.truncated)
            cli_err("%s: repaired a torn final write: cut %" PRIu64 " bytes after offset %" PRIu64
                    "%s%s",
                    q, ri.bytes_cut, ri.valid_size, ri.saved_path[0] ? ", saved to " : "",
                    ri.saved_path);
        else if (ri.zeros_only)
            cli_err("%s: ignoring %" PRIu64 " zero bytes after offset %" PRIu64
                    " (space a writer allocated ahead of its last entry, or a length that "
                    "reached the disk before its data: no entry; the next writable command "
                    "cuts them)",
                    q, ri.bytes_cut, ri.valid_size);
        else
            cli_err("%s: ignoring %" PRIu64 " bytes after offset %" PRIu64
                    " that are not complete, valid entries (a torn final write, or damage: "
                    "run 'check')",
                    q, ri.bytes_cut, ri.valid_size);
    }
    return CLI_OK;
}

int cli_open_store(const struct cli_args *a, const char *path, int mode, simdr_store **out) {
    simdr_options opts;
    simdr_options_init(&opts);
    opts.open_mode = mode;
    return cli_open_store_opts(a, path, &opts, out);
}

int cli_open_store_opts(const struct cli_args *a, const char *path, const simdr_options *opts,
                        simdr_store **out) {
    return open_store(a, path, opts, out, 1);
}

int cli_open_store_reporting_tail(const struct cli_args *a, const char *path,
                                  const simdr_options *opts, simdr_store **out) {
    return open_store(a, path, opts, out, 0);
}

void cli_ignored_tail(simdr_store *st, uint64_t *torn, uint64_t *zeros) {
    simdr_recovery_info ri;
    *torn = *zeros = 0;
    if (simdr_recovery(st, &ri) != SIMDR_OK || ri.truncated)
        return;
    if (ri.zeros_only)
        *zeros = ri.bytes_cut;
    else
        *torn = ri.bytes_cut;
}

/* cli_open_store that also says whether this open created the file. */
int cli_open_store_created(const struct cli_args *a, const char *path, int mode, simdr_store **out,
                           int *created) {
    struct stat sb;
    int existed = stat(path, &sb) == 0;
    int rc = cli_open_store(a, path, mode, out);
    *created = rc == CLI_OK && !existed;
    return rc;
}

/* Closes a store this command may have created; when the command failed
 * and the file it created holds nothing, the file is removed, so a failed
 * command leaves nothing behind. */
int cli_close_store_created(simdr_store *st, const char *path, int created, int failed) {
    if (!st)
        return CLI_OK;
    int empty = simdr_file_size(st) == 0;
    int rc = cli_close_store(st, path);
    if (created && failed && empty) {
        unlink(path);
        /* and the side file the library keeps beside a store it opened */
        char side[4200];
        if ((size_t)snprintf(side, sizeof side, "%s.simdr", path) < sizeof side)
            unlink(side);
    }
    return rc;
}

int cli_close_store(simdr_store *st, const char *path) {
    if (!st)
        return CLI_OK;
    int rc = simdr_close(st);
    if (rc != SIMDR_OK) {
        char q[512];
        cli_quote(q, sizeof q, path);
        return cli_fail_simdr(rc, "closing %s", q);
    }
    return CLI_OK;
}
