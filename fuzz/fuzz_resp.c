/*
 * fuzz_resp.c - libFuzzer target for simdr-server's RESP request parser
 * (server/resp.c): arbitrary bytes parsed as a stream of requests.
 *
 * The input is parsed twice: all at once, and fed in pieces whose sizes come
 * from the input itself, the way reads arrive on a socket. Both must yield
 * the same commands (same argument bytes) and end the same way; every
 * argument must lie inside the bytes its command consumed; errors must carry
 * Redis's "ERR Protocol error: " text. A broken promise calls abort().
 *
 * Built with -fsanitize=fuzzer (fuzz/CMakeLists.txt, SIMDR_BUILD_FUZZ=ON) and
 * with fuzz/replay_main.c as fuzz_resp_replay, which replays fuzz/corpus-resp/
 * in every test run.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

typedef struct outcome {
    uint8_t *log; /* the commands as length-prefixed argument bytes */
    size_t len, cap;
    int end;      /* RESP_MORE or RESP_ERROR at the end */
} outcome;

static void log_bytes(outcome *o, const void *p, size_t n) {
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n) cap *= 2;
        o->log = realloc(o->log, cap);
        if (!o->log) abort();
        o->cap = cap;
    }
    memcpy(o->log + o->len, p, n);
    o->len += n;
}

/* Parses data, revealing it chunk by chunk (chunk sizes from `sizes`, or
 * everything at once when sizes is NULL). */
static void run(const uint8_t *data, size_t size, const uint8_t *sizes, size_t nsizes,
                int unauthenticated, outcome *o) {
    char *buf = malloc(size ? size : 1);
    if (!buf) abort();
    memcpy(buf, data, size);
    resp_parser p;
    resp_parser_init(&p);
    resp_limits lim = {1024 * 1024, unauthenticated};
    size_t start = 0, visible = sizes ? 0 : size, k = 0;
    o->end = RESP_MORE;
    for (;;) {
        int rc = resp_parse(&p, buf + start, visible - start, &lim);
        if (rc == RESP_ERROR) {
            if (strncmp(p.error, "ERR Protocol error: ", 20) != 0) abort();
            o->end = RESP_ERROR;
            break;
        }
        if (rc == RESP_MORE) {
            if (visible == size) break;
            size_t step = sizes ? (size_t)(sizes[k++ % nsizes] % 64) + 1 : size;
            visible = visible + step > size ? size : visible + step;
            continue;
        }
        if (p.consumed == 0 || p.consumed > visible - start) abort();
        if (!p.empty) {
            uint32_t argc = (uint32_t)p.argc;
            log_bytes(o, &argc, sizeof argc);
            for (int i = 0; i < p.argc; i++) {
                if (p.argv[i].off > p.consumed || p.argv[i].len > p.consumed - p.argv[i].off)
                    abort();
                uint64_t len = p.argv[i].len;
                log_bytes(o, &len, sizeof len);
                log_bytes(o, buf + start + p.argv[i].off, p.argv[i].len);
            }
        }
        start += p.consumed;
        resp_parser_reset(&p);
    }
    resp_parser_free(&p);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int unauthenticated = data[0] & 1;
    size_t nsizes = (size_t)(data[0] >> 1) % 8 + 1;
    if (size < 1 + nsizes) return 0;
    const uint8_t *sizes = data + 1;
    const uint8_t *body = data + 1 + nsizes;
    size_t blen = size - 1 - nsizes;
    outcome whole = {0}, pieces = {0};
    run(body, blen, NULL, 0, unauthenticated, &whole);
    run(body, blen, sizes, nsizes, unauthenticated, &pieces);
    if (whole.end != pieces.end || whole.len != pieces.len ||
        (whole.len && memcmp(whole.log, pieces.log, whole.len) != 0))
        abort();
    free(whole.log);
    free(pieces.log);
    return 0;
}
