/*
 * args.c - command-line scanning for simd-r-drive: options are accepted
 * anywhere on the line (as the Rust tool's parser allows), sizes such as
 * "32K" or "1MB", and KEY arguments given as hex with --key-hex.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Takes the value of an option written either "--opt VALUE" or "--opt=VALUE".
 * Returns NULL (after reporting) when the value is missing. */
static const char *option_value(int argc, char **argv, int *i, const char *name, size_t name_len) {
    const char *arg = argv[*i];
    if (arg[name_len] == '=')
        return arg + name_len + 1;
    if (*i + 1 >= argc) {
        cli_usage_error("option %s needs a value", name);
        return NULL;
    }
    *i += 1;
    return argv[*i];
}

/* Whether arg is one of the options below (with or without its value). */
static int is_known_option(const char *arg) {
    static const char *const exact[] = {"--", "--key-hex", "--json", "--quiet", "-q", "--detailed",
                                        "--help", "-h", "--version", "-V", "--force", "-f"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(arg, exact[i]) == 0)
            return 1;
    return strncmp(arg, "--buffer-size", 13) == 0 || strncmp(arg, "--layout", 8) == 0 ||
           strncmp(arg, "-b", 2) == 0;
}

int cli_parse_args(int argc, char **argv, struct cli_args *out) {
    memset(out, 0, sizeof *out);
    out->buffer_size = CLI_DEFAULT_BUFFER;
    /* Positionals are compacted into argv[1..] in order; the write index
     * never passes the read index, so no allocation is needed. */
    int npos = 0;
    int options_done = 0;
    out->layout = -1;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (options_done || arg[0] != '-' || arg[1] == '\0') {
            argv[1 + npos++] = arg;
            continue;
        }
        /* write's VALUE is data, not an option: "write temp -5" stores "-5".
         * (Options the tool knows still count as options there.) */
        if (npos == 3 && strcmp(argv[2], "write") == 0 && !is_known_option(arg)) {
            argv[1 + npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = 1;
        } else if (strcmp(arg, "--key-hex") == 0) {
            out->key_hex = 1;
        } else if (strcmp(arg, "--json") == 0) {
            out->json = 1;
            out->given |= CLI_OPT_JSON;
        } else if (strcmp(arg, "--quiet") == 0 || strcmp(arg, "-q") == 0) {
            out->quiet = 1;
        } else if (strcmp(arg, "--force") == 0 || strcmp(arg, "-f") == 0) {
            out->force = 1;
            out->given |= CLI_OPT_FORCE;
        } else if (strncmp(arg, "--layout", 8) == 0 && (arg[8] == '\0' || arg[8] == '=')) {
            const char *v = option_value(argc, argv, &i, "--layout", 8);
            if (!v)
                return CLI_USAGE;
            if (strcmp(v, "unaligned") == 0)
                out->layout = SIMDR_LAYOUT_UNALIGNED;
            else if (strcmp(v, "aligned64") == 0 || strcmp(v, "aligned") == 0)
                out->layout = SIMDR_LAYOUT_ALIGNED64;
            else
                return cli_usage_error("invalid layout '%s' (aligned64 or unaligned)", v);
            out->given |= CLI_OPT_LAYOUT;
        } else if (strcmp(arg, "--detailed") == 0) {
            out->detailed = 1;
            out->given |= CLI_OPT_DETAILED;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            out->help = 1;
        } else if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            out->version = 1;
        } else if (strncmp(arg, "--buffer-size", 13) == 0 && (arg[13] == '\0' || arg[13] == '=')) {
            const char *v = option_value(argc, argv, &i, "--buffer-size", 13);
            if (!v)
                return CLI_USAGE;
            if (cli_parse_size(v, &out->buffer_size) != 0)
                return cli_usage_error("invalid buffer size '%s' (examples: 4096, 4096B, 32K, 1KiB, 1MB, 1MiB, 1G)", v);
            out->have_buffer = 1;
            out->given |= CLI_OPT_BUFFER;
        } else if (strncmp(arg, "-b", 2) == 0) {
            /* clap's short form: "-b SIZE" or "-bSIZE" */
            const char *v = arg[2] ? arg + 2 : NULL;
            if (!v) {
                if (i + 1 >= argc)
                    return cli_usage_error("option -b needs a value");
                v = argv[++i];
            }
            if (cli_parse_size(v, &out->buffer_size) != 0)
                return cli_usage_error("invalid buffer size '%s' (examples: 4096, 4096B, 32K, 1KiB, 1MB, 1MiB, 1G)", v);
            out->have_buffer = 1;
            out->given |= CLI_OPT_BUFFER;
        } else {
            return cli_usage_error("unknown option '%s' (use -- before a key that starts with '-')",
                                   arg);
        }
    }
    if (npos >= 1)
        out->store_path = argv[1];
    if (npos >= 2)
        out->command = argv[2];
    out->argv = argv + 3;
    out->argc = npos > 2 ? npos - 2 : 0;
    return CLI_OK;
}

/* Sizes as the Rust tool accepts them, and the IEC spellings: digits,
 * optionally followed by B, K/KB/KiB, M/MB/MiB or G/GB/GiB (all powers of
 * 1024, any case), surrounding spaces ignored. Zero and values that overflow
 * size_t are refused. */
int cli_parse_size(const char *text, size_t *out) {
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t n = 0;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
        p++;
    }
    char unit[4] = {0};
    size_t ulen = 0;
    while (*p && !isspace((unsigned char)*p)) {
        if (ulen == 3)
            return -1;
        unit[ulen++] = (char)tolower((unsigned char)*p);
        p++;
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p)
        return -1;
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {{"", 1},           {"b", 1},          {"k", 1024},       {"kb", 1024},
                 {"kib", 1024},     {"m", 1u << 20},   {"mb", 1u << 20},  {"mib", 1u << 20},
                 {"g", 1u << 30},   {"gb", 1u << 30},  {"gib", 1u << 30}};
    uint64_t mult = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].name) == 0)
            mult = units[i].mult;
    if (mult == 0 || n == 0 || n > UINT64_MAX / mult || n * mult > (uint64_t)SIZE_MAX)
        return -1;
    *out = (size_t)(n * mult);
    return 0;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Turns a KEY argument into bytes. With --key-hex the argument is hex
 * (optional 0x prefix, even number of digits), so keys holding zero bytes or
 * invalid UTF-8 can be named from a shell. Returns CLI_USAGE on bad hex. */
int cli_key_from_arg(const struct cli_args *a, const char *arg, struct cli_key *key) {
    memset(key, 0, sizeof *key);
    key->text = arg;
    if (!a->key_hex) {
        key->data = arg;
        key->len = strlen(arg);
        return CLI_OK;
    }
    const char *h = arg;
    if (h[0] == '0' && (h[1] == 'x' || h[1] == 'X'))
        h += 2;
    size_t n = strlen(h);
    if (n % 2 != 0)
        return cli_usage_error("--key-hex: '%s' has an odd number of hex digits", arg);
    /* +1 so an empty key still gets a valid pointer */
    key->owned = malloc(n / 2 + 1);
    if (!key->owned) {
        cli_err("out of memory");
        return CLI_FAIL;
    }
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval((unsigned char)h[2 * i]), lo = hexval((unsigned char)h[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            cli_key_free(key);
            return cli_usage_error("--key-hex: '%s' is not hex", arg);
        }
        key->owned[i] = (unsigned char)(hi << 4 | lo);
    }
    key->data = key->owned;
    key->len = n / 2;
    return CLI_OK;
}

void cli_key_free(struct cli_key *key) {
    free(key->owned);
    key->owned = NULL;
    key->data = NULL;
    key->len = 0;
}
