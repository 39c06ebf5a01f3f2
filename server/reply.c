/*
 * reply.c - writes RESP2/RESP3 replies into a client's output buffer. Large
 * values are not copied: the buffer references the mapped bytes of the store
 * and releases the simdr entry once libevent has written them.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* Below this size a copy is cheaper than a buffer reference (an allocation
 * and a callback per reply); at and above it the reply is zero-copy. */
#define ZERO_COPY_MIN 256

void reply_raw(client *c, const void *p, size_t n) {
    if (c->flags & CLIENT_CLOSED) return;
    evbuffer_add(c->out, p, n);
}

void reply_simple(client *c, const char *s) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, "+%s\r\n", s);
    reply_raw(c, buf, (size_t)n);
}

void reply_ok(client *c) { reply_raw(c, "+OK\r\n", 5); }

/* As Redis's addReplyErrorFormat: newlines in the text become spaces, and
 * the text is whole however long (an error may quote a long argument). */
void reply_error(client *c, const char *fmt, ...) {
    char small[1024], *buf = small;
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(buf + 1, sizeof small - 3, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof small - 4) {
        char *big = malloc((size_t)n + 4);
        if (big) {
            buf = big;
            vsnprintf(buf + 1, (size_t)n + 1, fmt, again);
        } else {
            n = (int)(sizeof small - 4);
        }
    }
    va_end(again);
    buf[0] = '-';
    for (int i = 1; i <= n; i++)
        if (buf[i] == '\r' || buf[i] == '\n') buf[i] = ' ';
    buf[n + 1] = '\r';
    buf[n + 2] = '\n';
    reply_raw(c, buf, (size_t)n + 3);
    if (buf != small) free(buf);
}

/* Writes v in decimal at out; returns the length. (snprintf's format
 * parsing was a visible share of a pipelined INCR's time.) */
static size_t format_ll(char *out, long long v) {
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

/* type, the number, CRLF: one buffer append. */
static void reply_typed_number(client *c, char type, long long v) {
    char buf[32];
    buf[0] = type;
    size_t n = 1 + format_ll(buf + 1, v);
    buf[n++] = '\r';
    buf[n++] = '\n';
    reply_raw(c, buf, n);
}

void reply_int(client *c, long long v) { reply_typed_number(c, ':', v); }

static void bulk_header(client *c, size_t n) { reply_typed_number(c, '$', (long long)n); }

#define SMALL_BULK 512

void reply_bulk(client *c, const void *p, size_t n) {
    if (n <= SMALL_BULK) { /* one append instead of three */
        char buf[SMALL_BULK + 32];
        buf[0] = '$';
        size_t k = 1 + format_ll(buf + 1, (long long)n);
        buf[k++] = '\r';
        buf[k++] = '\n';
        memcpy(buf + k, p, n);
        k += n;
        buf[k++] = '\r';
        buf[k++] = '\n';
        reply_raw(c, buf, k);
        return;
    }
    bulk_header(c, n);
    reply_raw(c, p, n);
    reply_raw(c, "\r\n", 2);
}

void reply_cstr(client *c, const char *s) { reply_bulk(c, s, strlen(s)); }

void reply_bulk_ll(client *c, long long v) {
    char buf[32];
    reply_bulk(c, buf, format_ll(buf, v));
}

static void release_entry(const void *data, size_t len, void *arg) {
    (void)data;
    (void)len;
    simdr_entry_release(arg);
}

void reply_bulk_entry(client *c, simdr_entry *entry, const void *p, size_t n) {
    if (!entry || n < ZERO_COPY_MIN || (c->flags & CLIENT_CLOSED)) { /* !entry: a pending record */
        reply_bulk(c, p, n);
        simdr_entry_release(entry);
        return;
    }
    bulk_header(c, n);
    if (evbuffer_add_reference(c->out, p, n, release_entry, entry) != 0) {
        evbuffer_add(c->out, p, n);
        simdr_entry_release(entry);
    }
    reply_raw(c, "\r\n", 2);
}

void reply_null(client *c) {
    if (c->resp == 3)
        reply_raw(c, "_\r\n", 3);
    else
        reply_raw(c, "$-1\r\n", 5);
}

void reply_null_array(client *c) {
    if (c->resp == 3)
        reply_raw(c, "_\r\n", 3);
    else
        reply_raw(c, "*-1\r\n", 5);
}

void reply_array(client *c, long long n) { reply_typed_number(c, '*', n); }

void reply_empty_array(client *c) { reply_array(c, 0); }

void reply_map(client *c, long long n) {
    char buf[32];
    int k = c->resp == 3 ? snprintf(buf, sizeof buf, "%%%lld\r\n", n)
                         : snprintf(buf, sizeof buf, "*%lld\r\n", n * 2);
    reply_raw(c, buf, (size_t)k);
}

void reply_verbatim(client *c, const char *s, size_t n) {
    if (c->resp != 3) {
        reply_bulk(c, s, n);
        return;
    }
    char buf[40];
    int k = snprintf(buf, sizeof buf, "=%zu\r\ntxt:", n + 4);
    reply_raw(c, buf, (size_t)k);
    reply_raw(c, s, n);
    reply_raw(c, "\r\n", 2);
}
