/*
 * util.c - small helpers of simdr-server: clocks, the log, Redis-compatible
 * number parsing and formatting, glob matching (KEYS, SCAN MATCH, CONFIG GET)
 * and a constant-time secret comparison.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

long long now_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000000 + tv.tv_usec;
}

long long now_ms(void) { return now_us() / 1000; }

long long key_now_ms(void) { return srv.exec_time_ms ? srv.exec_time_ms : now_ms(); }

/* Each message opens the log file, appends and closes it, as Redis does:
 * a log renamed away by a rotation is created again by the next message
 * (no signal needed), and the compaction thread logs too (the mutex keeps
 * its lines whole). A file that cannot be opened: standard error. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void server_log(int level, const char *fmt, ...) {
    if (level < srv.cfg.loglevel) return;
    char when[64];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(when, sizeof when, "%d %b %Y %H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03d", (int)(tv.tv_usec / 1000));
    const char marks[] = ".-*#";
    pthread_mutex_lock(&log_lock);
    FILE *log_file = srv.cfg.logfile[0] ? fopen(srv.cfg.logfile, "ae") : NULL;
    FILE *f = log_file ? log_file : stderr;
    fprintf(f, "%d:M %s %c ", (int)getpid(), when, marks[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    if (log_file)
        fclose(log_file);
    else
        fflush(f);
    pthread_mutex_unlock(&log_lock);
}

/* Sets the log file (CONFIG SET logfile, --logfile): -1 with err when it
 * cannot be opened for appending, and nothing changes (Redis refuses to
 * start then). Under the log's mutex: the compaction thread reads the name. */
int server_log_set_file(const char *path, char *err, size_t cap) {
    if (strlen(path) >= sizeof srv.cfg.logfile) {
        snprintf(err, cap, "the log file's name is too long");
        return -1;
    }
    if (path[0]) {
        FILE *f = fopen(path, "ae");
        if (!f) {
            snprintf(err, cap, "can't open the log file %s: %s", path, strerror(errno));
            return -1;
        }
        fclose(f);
    }
    pthread_mutex_lock(&log_lock);
    snprintf(srv.cfg.logfile, sizeof srv.cfg.logfile, "%s", path);
    pthread_mutex_unlock(&log_lock);
    return 0;
}

/* Redis's stringmatchlen: '*', '?', '[...]' with '^' and ranges, '\' escapes.
 * skip_longer is Redis 7.0's skipLongerMatches: once the rest of the pattern
 * after a '*' matched nowhere in the rest of the string, no earlier '*' can
 * help by matching more, so every level gives up at once. Without it a
 * pattern like "*a*a*a*a*a*a*a*a*b" takes time exponential in its stars (a
 * KEYS or SCAN MATCH that stalls the server). */
static int glob_rec(const char *p, size_t plen, const char *s, size_t slen, int nocase,
                    int *skip_longer, int depth) {
    if (depth > 1000) return 0;
    while (plen && slen) {
        switch (p[0]) {
        case '*':
            while (plen > 1 && p[1] == '*') {
                p++;
                plen--;
            }
            if (plen == 1) return 1;
            while (slen) {
                if (glob_rec(p + 1, plen - 1, s, slen, nocase, skip_longer, depth + 1)) return 1;
                if (*skip_longer) return 0;
                s++;
                slen--;
            }
            *skip_longer = 1;
            return 0;
        case '?':
            s++;
            slen--;
            break;
        case '[': {
            int not_ = 0, match = 0;
            p++;
            plen--;
            if (plen && p[0] == '^') {
                not_ = 1;
                p++;
                plen--;
            }
            for (;;) {
                if (plen && p[0] == '\\' && plen >= 2) {
                    p++;
                    plen--;
                    if (p[0] == s[0]) match = 1;
                } else if (plen && p[0] == ']') {
                    break;
                } else if (plen == 0) {
                    p--;
                    plen++;
                    break;
                } else if (plen >= 3 && p[1] == '-') {
                    /* Bytes compared as Redis compares them, as signed chars: 0x80-0xff
                     * order below 0x00, so "[\xff-a]" holds 0xff, 0x00 and 'a' but not
                     * 'b', and "[\x00-\xff]" only 0x00 and 0xff. */
                    int start = (signed char)p[0], end = (signed char)p[2];
                    int c = (signed char)s[0];
                    if (start > end) {
                        int t = start;
                        start = end;
                        end = t;
                    }
                    if (nocase) { /* tolower leaves bytes above 0x7f as they are */
                        start = start < 0 ? start : tolower(start);
                        end = end < 0 ? end : tolower(end);
                        c = c < 0 ? c : tolower(c);
                    }
                    p += 2;
                    plen -= 2;
                    if (c >= start && c <= end) match = 1;
                } else if (nocase ? tolower((unsigned char)p[0]) == tolower((unsigned char)s[0])
                                  : p[0] == s[0]) {
                    match = 1;
                }
                p++;
                plen--;
            }
            if (not_) match = !match;
            if (!match) return 0;
            s++;
            slen--;
            break;
        }
        case '\\':
            if (plen >= 2) {
                p++;
                plen--;
            }
            /* fall through */
        default:
            if (nocase ? tolower((unsigned char)p[0]) != tolower((unsigned char)s[0])
                       : p[0] != s[0])
                return 0;
            s++;
            slen--;
            break;
        }
        p++;
        plen--;
        if (slen == 0) {
            while (plen && *p == '*') {
                p++;
                plen--;
            }
            break;
        }
    }
    return plen == 0 && slen == 0;
}

int glob_match(const char *pat, size_t plen, const char *s, size_t slen, int nocase) {
    int skip_longer = 0;
    return glob_rec(pat, plen, s, slen, nocase, &skip_longer, 0);
}

int parse_ll(const char *s, size_t len, long long *out) { return resp_str_to_ll(s, len, out); }

/* Redis's string2ld: at most 5,119 characters (MAX_LONG_DOUBLE_CHARS less
 * the terminator). */
int parse_ld(const char *s, size_t len, long double *out) {
    char buf[5 * 1024];
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    if (isspace((unsigned char)buf[0])) return 0;
    char *end;
    errno = 0;
    long double v = strtold(buf, &end);
    if ((size_t)(end - buf) != len) return 0;
    if (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO))
        return 0;
    if (isnan(v)) return 0;
    *out = v;
    return 1;
}

/* Redis's ld2string in "human" mode: 17 decimals, trailing zeros dropped. */
int format_ld(char *buf, size_t cap, long double v) {
    if (isinf(v)) return snprintf(buf, cap, v > 0 ? "inf" : "-inf");
    int l = snprintf(buf, cap, "%.17Lf", v);
    if (l < 0 || (size_t)l + 1 > cap) return -1;
    if (strchr(buf, '.')) {
        char *p = buf + l - 1;
        while (*p == '0') {
            p--;
            l--;
        }
        if (*p == '.') l--;
    }
    if (l == 2 && buf[0] == '-' && buf[1] == '0') {
        buf[0] = '0';
        l = 1;
    }
    buf[l] = 0;
    return l;
}

int eq_nocase(const char *a, size_t alen, const char *lit) {
    size_t n = strlen(lit);
    return alen == n && strncasecmp(a, lit, n) == 0;
}

/* Time depends on the secret's length only, never on where the inputs differ. */
int secret_equal(const char *secret, size_t slen, const char *given, size_t glen) {
    volatile unsigned char diff = (unsigned char)(slen != glen);
    for (size_t i = 0; i < slen; i++) {
        unsigned char g = glen ? (unsigned char)given[i % glen] : 0;
        diff |= (unsigned char)(secret[i] ^ g);
    }
    return diff == 0;
}
