/*
 * resp.h - the RESP request parser of simdr-server: bytes in, one command's
 * arguments out, with no I/O and no allocation besides the argument table,
 * so the fuzz target and the network code share it.
 *
 * The parser follows Redis 7.0 (networking.c) byte for byte where it is
 * observable: the first byte '*' selects a multibulk request, anything else an
 * inline (telnet) line split like sdssplitargs; errors carry Redis's texts.
 */
#ifndef SIMDR_SERVER_RESP_H
#define SIMDR_SERVER_RESP_H

#include <stddef.h>
#include <stdint.h>

/* Longest inline line, multibulk count line or bulk length line (Redis's
 * PROTO_INLINE_MAX_SIZE). */
#define RESP_INLINE_MAX (64 * 1024)
/* Bulk arguments at least this long are read into room reserved up front, so
 * the argument ends up contiguous without repeated buffer growth. */
#define RESP_BIG_ARG (32 * 1024)

typedef struct resp_arg {
    size_t off; /* offset from the start of the command's bytes */
    size_t len;
} resp_arg;

typedef struct resp_limits {
    long long max_bulk_len;   /* proto-max-bulk-len */
    int unauthenticated;      /* Redis's stricter limits before AUTH */
} resp_limits;

enum resp_result {
    RESP_DONE = 0,  /* a command is complete: argv/argc, consumed */
    RESP_MORE = 1,  /* more bytes needed; need_total may say how many */
    RESP_ERROR = 2  /* protocol error: error holds Redis's reply text */
};

typedef struct resp_parser {
    int kind;            /* 0 undecided, '*' multibulk, 'i' inline */
    long long mb_left;   /* multibulk arguments still to read */
    long long bulk_len;  /* length of the bulk being read, -1: its header */
    size_t pos;          /* parse position, relative to the command start */
    resp_arg *argv;
    int argc, argcap;
    size_t consumed;     /* RESP_DONE: bytes of the command (to drop) */
    size_t need_total;   /* RESP_MORE: bytes the command needs, if known */
    int empty;           /* RESP_DONE: an empty request (skip it) */
    char error[160];     /* RESP_ERROR: "ERR Protocol error: ..." */
} resp_parser;

void resp_parser_init(resp_parser *p);
void resp_parser_free(resp_parser *p);
/* Forget a finished or abandoned command (keeps the argument table). */
void resp_parser_reset(resp_parser *p);

/*
 * Parses the command that starts at buf[0]; len bytes are available. Inline
 * requests are unescaped in place (buf is modified; arguments shrink only).
 * Call again with the same buf start and more bytes after RESP_MORE.
 * Returns RESP_ERROR also when the argument table cannot grow (ENOMEM).
 */
int resp_parse(resp_parser *p, char *buf, size_t len, const resp_limits *lim);

/* Splits line[0, n) as an inline request is split (sdssplitargs: quotes,
 * escapes), as redis.conf lines are: p->argc arguments at p->argv[i].off
 * of line, written over it. 1 done, 0 unbalanced quotes, -1 no memory. */
int resp_split_line(resp_parser *p, char *line, size_t n);

/* Redis's string2ll: strict decimal (no '+', no leading zeros, no spaces). */
int resp_str_to_ll(const char *s, size_t len, long long *out);

#endif
