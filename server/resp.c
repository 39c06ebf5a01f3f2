/*
 * resp.c - the RESP request parser (see resp.h): multibulk and inline
 * requests, incremental across reads, with Redis 7.0's limits and error texts.
 */
#include "resp.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void resp_parser_init(resp_parser *p) {
    memset(p, 0, sizeof *p);
    p->bulk_len = -1;
}

void resp_parser_free(resp_parser *p) {
    free(p->argv);
    p->argv = NULL;
    p->argcap = 0;
}

void resp_parser_reset(resp_parser *p) {
    p->kind = 0;
    p->mb_left = 0;
    p->bulk_len = -1;
    p->pos = 0;
    p->argc = 0;
    p->consumed = 0;
    p->need_total = 0;
    p->empty = 0;
    p->error[0] = 0;
}

int resp_str_to_ll(const char *s, size_t len, long long *out) {
    const char *p = s;
    size_t plen = 0;
    int negative = 0;
    unsigned long long v;

    if (len == 0 || len > 20) return 0;
    if (len == 1 && p[0] == '0') {
        *out = 0;
        return 1;
    }
    if (p[0] == '-') {
        negative = 1;
        p++;
        plen++;
        if (plen == len) return 0;
    }
    if (p[0] >= '1' && p[0] <= '9') {
        v = (unsigned long long)(p[0] - '0');
        p++;
        plen++;
    } else {
        return 0;
    }
    while (plen < len && p[0] >= '0' && p[0] <= '9') {
        if (v > ULLONG_MAX / 10) return 0;
        v *= 10;
        if (v > ULLONG_MAX - (unsigned long long)(p[0] - '0')) return 0;
        v += (unsigned long long)(p[0] - '0');
        p++;
        plen++;
    }
    if (plen < len) return 0;
    if (negative) {
        if (v > (unsigned long long)LLONG_MAX + 1) return 0;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX) return 0;
        *out = (long long)v;
    }
    return 1;
}

static int fail(resp_parser *p, const char *what) {
    snprintf(p->error, sizeof p->error, "ERR Protocol error: %s", what);
    return RESP_ERROR;
}

static int push_arg(resp_parser *p, size_t off, size_t len) {
    if (p->argc == p->argcap) {
        int cap = p->argcap ? p->argcap * 2 : 16;
        resp_arg *n = realloc(p->argv, (size_t)cap * sizeof *n);
        if (!n) return 0;
        p->argv = n;
        p->argcap = cap;
    }
    p->argv[p->argc].off = off;
    p->argv[p->argc].len = len;
    p->argc++;
    return 1;
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Splits line[0, n) like sdssplitargs (a NUL byte ends the line), writing
 * each unescaped argument over the bytes it came from. 0 on unbalanced
 * quotes, -1 on allocation failure. */
static int split_inline(resp_parser *p, char *line, size_t n) {
    size_t r = 0, w = 0;
#define AT(i) ((i) < n ? (unsigned char)line[(i)] : 0)
    for (;;) {
        while (AT(r) && is_space(AT(r))) r++;
        if (!AT(r)) return 1;
        size_t start = w;
        int in_dq = 0, in_sq = 0, done = 0;
        while (!done) {
            unsigned char c = AT(r);
            if (in_dq) {
                if (c == '\\' && AT(r + 1) == 'x' && hex_value(AT(r + 2)) >= 0 &&
                    hex_value(AT(r + 3)) >= 0) {
                    line[w++] = (char)(hex_value(AT(r + 2)) * 16 + hex_value(AT(r + 3)));
                    r += 3;
                } else if (c == '\\' && AT(r + 1)) {
                    r++;
                    switch (AT(r)) {
                    case 'n': line[w++] = '\n'; break;
                    case 'r': line[w++] = '\r'; break;
                    case 't': line[w++] = '\t'; break;
                    case 'b': line[w++] = '\b'; break;
                    case 'a': line[w++] = '\a'; break;
                    default: line[w++] = (char)AT(r); break;
                    }
                } else if (c == '"') {
                    if (AT(r + 1) && !is_space(AT(r + 1))) return 0;
                    done = 1;
                } else if (!c) {
                    return 0;
                } else {
                    line[w++] = (char)c;
                }
            } else if (in_sq) {
                if (c == '\\' && AT(r + 1) == '\'') {
                    r++;
                    line[w++] = '\'';
                } else if (c == '\'') {
                    if (AT(r + 1) && !is_space(AT(r + 1))) return 0;
                    done = 1;
                } else if (!c) {
                    return 0;
                } else {
                    line[w++] = (char)c;
                }
            } else {
                switch (c) {
                case ' ': case '\n': case '\r': case '\t': case 0: done = 1; break;
                case '"': in_dq = 1; break;
                case '\'': in_sq = 1; break;
                default: line[w++] = (char)c; break;
                }
            }
            if (AT(r)) r++;
        }
        if (!push_arg(p, start, w - start)) return -1;
    }
#undef AT
}

int resp_split_line(resp_parser *p, char *line, size_t n) {
    resp_parser_reset(p);
    p->argc = 0;
    return split_inline(p, line, n);
}

static int parse_inline(resp_parser *p, char *buf, size_t len) {
    char *nl = memchr(buf, '\n', len);
    if (!nl) {
        if (len > RESP_INLINE_MAX) return fail(p, "too big inline request");
        return RESP_MORE;
    }
    size_t line_len = (size_t)(nl - buf);
    size_t consumed = line_len + 1;
    if (line_len > 0 && buf[line_len - 1] == '\r') line_len--;
    p->argc = 0;
    int ok = split_inline(p, buf, line_len);
    if (ok == 0) return fail(p, "unbalanced quotes in request");
    if (ok < 0) return fail(p, "out of memory");
    p->consumed = consumed;
    p->empty = p->argc == 0;
    return RESP_DONE;
}

/* Finds the "\r\n"-terminated line starting at buf[from]. Returns 1 with
 * *line_end at the '\r', 0 when more bytes are needed, -1 when the line is
 * longer than Redis allows without a '\r'. */
static int find_line(const char *buf, size_t len, size_t from, size_t *line_end) {
    const char *cr = memchr(buf + from, '\r', len - from);
    if (!cr) return len - from > RESP_INLINE_MAX ? -1 : 0;
    size_t at = (size_t)(cr - buf);
    if (at + 1 >= len) return 0; /* the '\n' has not arrived yet */
    *line_end = at;
    return 1;
}

static int parse_multibulk(resp_parser *p, char *buf, size_t len, const resp_limits *lim) {
    size_t end;
    long long ll;
    if (p->mb_left == 0) {
        int f = find_line(buf, len, 0, &end);
        if (f < 0) return fail(p, "too big mbulk count string");
        if (f == 0) return RESP_MORE;
        if (!resp_str_to_ll(buf + 1, end - 1, &ll) || ll > INT_MAX)
            return fail(p, "invalid multibulk length");
        if (ll > 10 && lim->unauthenticated) return fail(p, "unauthenticated multibulk length");
        p->pos = end + 2;
        if (ll <= 0) {
            p->consumed = p->pos;
            p->empty = 1;
            return RESP_DONE;
        }
        p->mb_left = ll;
        p->argc = 0;
    }
    while (p->mb_left) {
        if (p->bulk_len == -1) {
            if (p->pos >= len) return RESP_MORE;
            int f = find_line(buf, len, p->pos, &end);
            if (f < 0) return fail(p, "too big bulk count string");
            if (f == 0) return RESP_MORE;
            if (buf[p->pos] != '$') {
                snprintf(p->error, sizeof p->error, "ERR Protocol error: expected '$', got '%c'",
                         buf[p->pos]);
                return RESP_ERROR;
            }
            if (!resp_str_to_ll(buf + p->pos + 1, end - p->pos - 1, &ll) || ll < 0 ||
                ll > lim->max_bulk_len)
                return fail(p, "invalid bulk length");
            if (ll > 16384 && lim->unauthenticated) return fail(p, "unauthenticated bulk length");
            p->pos = end + 2;
            p->bulk_len = ll;
        }
        if (len - p->pos < (size_t)p->bulk_len + 2) {
            p->need_total = p->pos + (size_t)p->bulk_len + 2;
            return RESP_MORE;
        }
        if (!push_arg(p, p->pos, (size_t)p->bulk_len)) return fail(p, "out of memory");
        /* As Redis: the two bytes after the data are skipped, not checked. */
        p->pos += (size_t)p->bulk_len + 2;
        p->bulk_len = -1;
        p->mb_left--;
    }
    p->consumed = p->pos;
    p->need_total = 0;
    return RESP_DONE;
}

int resp_parse(resp_parser *p, char *buf, size_t len, const resp_limits *lim) {
    if (len == 0) return RESP_MORE;
    if (!p->kind) p->kind = buf[0] == '*' ? '*' : 'i';
    p->need_total = 0;
    if (p->kind == 'i') return parse_inline(p, buf, len);
    return parse_multibulk(p, buf, len, lim);
}
