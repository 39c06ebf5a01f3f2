/*
 * cli.h - declarations shared by the files of the simd-r-drive command-line
 * tool: parsed arguments, exit codes, output helpers, progress display and
 * the command entry points. The tool uses only the public header simdr.h.
 */
#ifndef SIMDR_CLI_H
#define SIMDR_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "simdr.h"

/* Documented exit codes. Every command returns one of these to main(), which
 * is the only place the process ends (so cleanup always runs). */
enum cli_exit {
    CLI_OK = 0,    /* success */
    CLI_FAIL = 1,  /* the operation failed, or the key was not found */
    CLI_USAGE = 2  /* the command line was wrong */
};

/* Options a command accepts beyond the global ones (--key-hex, --help, ...). */
enum cli_opt_flags {
    CLI_OPT_JSON = 1u << 0,
    CLI_OPT_BUFFER = 1u << 1,
    CLI_OPT_DETAILED = 1u << 2,
    CLI_OPT_FORCE = 1u << 3,
    CLI_OPT_LAYOUT = 1u << 4
};

#define CLI_DEFAULT_BUFFER ((size_t)64 * 1024)

/* The command line after option scanning. Options may appear anywhere, so
 * positionals are collected in order: store path, command, then arguments. */
struct cli_args {
    const char *store_path;
    const char *command;
    char **argv;        /* command arguments (after the command name) */
    int argc;
    int key_hex;        /* KEY arguments are hex */
    int json;
    int quiet;          /* no confirmation lines on stderr */
    int detailed;       /* info --detailed: accepted for compatibility */
    int help;
    int version;
    int force;          /* export: overwrite existing files */
    int layout;         /* --layout for new stores: enum simdr_layout, -1 = default */
    int have_buffer;    /* --buffer-size given */
    size_t buffer_size;
    unsigned given;     /* which enum cli_opt_flags options appeared */
};

/* A key as bytes: either the argument itself or its hex decoding. */
struct cli_key {
    const char *text;   /* the argument as typed, for messages */
    unsigned char *owned;
    const void *data;
    size_t len;
};

/* ---- args.c ---- */
int cli_parse_args(int argc, char **argv, struct cli_args *out);
int cli_parse_size(const char *text, size_t *out);
int cli_key_from_arg(const struct cli_args *a, const char *arg, struct cli_key *key);
void cli_key_free(struct cli_key *key);

/* ---- util.c ---- */
/* Buffered standard output with a sticky error: after the reader of a pipe
 * goes away (EPIPE) every later write is dropped and cli_out_broken() is 1,
 * so long listings stop early instead of failing loudly. */
int cli_out_write(const void *buf, size_t len);
int cli_out_printf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
int cli_out_flush(void);
int cli_out_broken(void);
int cli_out_finish(void);
/* 1 when err is EAGAIN and fd is now ready for events (retry), else 0 with
 * errno = err (util.c). */
int cli_wait_ready(int fd, short events, int err);
int cli_write_all(int fd, const void *buf, size_t len);

void cli_err(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
void cli_note(const struct cli_args *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int cli_fail_simdr(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int cli_usage_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
void cli_quote(char *dst, size_t cap, const char *src);
/* The same for len bytes that may hold zero bytes (keys read from a store). */
void cli_quote_bytes(char *dst, size_t cap, const void *src, size_t len);
void cli_format_bytes(char *dst, size_t cap, uint64_t bytes);
void cli_out_json_string(const void *s, size_t len);
void cli_out_hex(const void *s, size_t len);
const char *cli_layout_name(int layout);

int cli_open_store(const struct cli_args *a, const char *path, int mode, simdr_store **out);
/* The same with options filled by the caller (simdr_options_init first). */
int cli_open_store_opts(const struct cli_args *a, const char *path, const simdr_options *opts,
                        simdr_store **out);
/* cli_open_store_opts for commands whose own report shows what a read-only
 * open skipped (info, check): no note on stderr about it. */
int cli_open_store_reporting_tail(const struct cli_args *a, const char *path,
                                  const simdr_options *opts, simdr_store **out);
/* What a read-only open skipped after the valid chain: bytes that are not
 * complete, valid entries (torn), or zeros only (zeros); 0 and 0 otherwise. */
void cli_ignored_tail(simdr_store *st, uint64_t *torn, uint64_t *zeros);
int cli_close_store(simdr_store *st, const char *path);
int cli_open_store_created(const struct cli_args *a, const char *path, int mode, simdr_store **out,
                           int *created);
int cli_close_store_created(simdr_store *st, const char *path, int created, int failed);
/* "1 file", "2 files": n followed by the singular or the plural word. */
const char *cli_plural(uint64_t n, const char *one, const char *many);

/* ---- names.c ---- */
/* Key names: see docs/FORMAT.md, "CLI key names". */
#define CLI_NAME_KEY_LEN 20
#define CLI_NAME_MAX ((size_t)64 * 1024) /* longer keys stay unnamed */
struct cli_names;
void cli_name_key(uint64_t key_hash, unsigned char out[CLI_NAME_KEY_LEN]);
/* 1 if e is a name record (then its named key hash and name bytes). */
int cli_name_record_parse(const simdr_entry *e, uint64_t *named_hash, const void **name,
                          size_t *name_len);
/* 1 if e is a record simdr-server wrote (docs/FORMAT.md, "Server records")
 * stored in one of its key's slots; then that key's bytes. Holes are not. */
int cli_server_record_key(const simdr_entry *e, const void **key, size_t *key_len);
/* Writes key's name record unless the same one is already stored. */
int cli_name_put(simdr_store *st, const void *key, size_t len);
/* cli_name_put after a value was stored under key: a failure is said on
 * stderr as a name not recorded (what: the command's words), not as a
 * failed command; returns cli_name_put's status. */
int cli_name_put_or_warn(simdr_store *st, const void *key, size_t len, const char *what);
/* Stores value and key's name record in one append. */
int cli_put_named(simdr_store *st, const void *key, size_t len, const void *value, size_t vlen);
/* Deletes key and its name record in one append (SIMDR_NOTFOUND if absent). */
int cli_delete_named(simdr_store *st, const void *key, size_t len);
/* Deletes key's name record if there is one. */
int cli_name_delete(simdr_store *st, const void *key, size_t len);
/* Every name record of the store, by the hash of the key it names. */
int cli_names_load(simdr_store *st, struct cli_names **out);
int cli_names_find(const struct cli_names *n, uint64_t hash, const void **name, size_t *len);
uint64_t cli_names_records(const struct cli_names *n);
/* How many of the named keys are live. */
uint64_t cli_names_live(const struct cli_names *n, simdr_store *st);
/* Deletes the name records of keys no longer stored (deleted by another
 * program), so a compaction drops them; *dropped gets how many. */
int cli_names_drop_orphans(simdr_store *st, uint64_t *dropped);
/* Walks the names: start with *cursor = 0; 0 at the end. */
int cli_names_each(const struct cli_names *n, size_t *cursor, uint64_t *hash, const void **name,
                   size_t *len);
/* A name as text for a listing: control bytes, C1 controls, backslashes and
 * bytes that are not UTF-8 shown as \xNN. */
void cli_out_name(const void *name, size_t len);
void cli_names_free(struct cli_names *n);

/* ---- progress.c ---- */
struct cli_progress;
/* total 0 = unknown size. min_bytes: nothing is drawn before this many bytes
 * are done (small transfers stay quiet even on a terminal). Returns NULL
 * (progress disabled; every call accepts NULL) when stderr is not a terminal. */
struct cli_progress *cli_progress_start(const char *label, uint64_t total, uint64_t min_bytes);
/* done counts from the current base (set it before each file of a multi-file
 * operation so the bar shows the running total). */
void cli_progress_update(struct cli_progress *p, uint64_t done);
void cli_progress_base(struct cli_progress *p, uint64_t base);
void cli_progress_set_label(struct cli_progress *p, const char *label);
void cli_progress_end(struct cli_progress *p);
/* Erases a drawn progress line (it is redrawn on the next update), so a
 * message printed now starts on a clean line. */
void cli_progress_clear_line(void);
/* Compaction progress: the share of the new file written so far, read from
 * the size of "<store>.compact" against the expected size. NULL when stderr
 * is not a terminal. */
struct cli_ticker *cli_ticker_start_file(const char *label, const char *watch_path,
                                         uint64_t expected);
/* A spinner with elapsed time, redrawn by a thread, for library calls that
 * report no progress (compact, check). NULL when stderr is not a terminal. */
struct cli_ticker;
struct cli_ticker *cli_ticker_start(const char *label);
void cli_ticker_end(struct cli_ticker *t);

/* ---- cmd_read_write.c ---- */
/* Values at least this big show a progress bar (when stderr is a terminal). */
#define CLI_PROGRESS_MIN ((uint64_t)8 << 20)
int cli_put_from_fd(simdr_store *st, const void *key, size_t key_len, int fd,
                    struct cli_progress *prog, int *read_errno, uint64_t *bytes_read);
int cli_write_entry(const simdr_entry *e, int fd, const char *dest, size_t chunk,
                    struct cli_progress *prog);
void cli_explain_refused_value(const char *what);
/* SIGINT/SIGTERM/SIGHUP stop a streaming write cleanly from here on;
 * cli_interrupts_finish (main, after cleanup) re-raises the signal. */
void cli_interrupts_catch(void);
int cli_interrupted(void);
void cli_interrupts_finish(void);
int cmd_read(const struct cli_args *a);
int cmd_write(const struct cli_args *a);
int cmd_delete(const struct cli_args *a);

/* ---- cmd_transfer.c ---- */
int cmd_copy(const struct cli_args *a);
int cmd_move(const struct cli_args *a);
int cmd_rename(const struct cli_args *a);

/* ---- cmd_info.c ---- */
int cmd_info(const struct cli_args *a);
int cmd_metadata(const struct cli_args *a);
int cmd_list(const struct cli_args *a);

/* ---- cmd_maint.c ---- */
int cmd_compact(const struct cli_args *a);
int cmd_check(const struct cli_args *a);

/* ---- cmd_import_export.c ---- */
int cmd_import(const struct cli_args *a);
int cmd_export(const struct cli_args *a);

#endif /* SIMDR_CLI_H */
