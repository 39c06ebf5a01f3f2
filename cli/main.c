/*
 * main.c - entry point of the simd-r-drive command-line tool: the command
 * table, help and version text, argument-count checks, and the single place
 * where the exit status is decided.
 *
 *   simd-r-drive <storage-file> <command> [args]
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

struct command {
    const char *name;
    const char *alias;
    int (*run)(const struct cli_args *a);
    int min_args, max_args; /* max_args < 0: no limit */
    unsigned opts;          /* enum cli_opt_flags the command accepts */
    const char *synopsis;
    const char *help;       /* what "simd-r-drive COMMAND --help" prints after the synopsis */
};

#define NEW_STORE_OPTS CLI_OPT_LAYOUT /* commands that may create a store */

static const struct command commands[] = {
    {"read", NULL, cmd_read, 1, 1, CLI_OPT_BUFFER, "read KEY [--buffer-size SIZE]",
     "Writes the value of KEY to standard output, byte for byte, in SIZE chunks straight\n"
     "from the file (constant memory for any size). A newline is added only when stdout\n"
     "is a terminal. Opens the store read-only.\n"
     "  -b, --buffer-size SIZE  chunk size: 4096, 4096B, 32K, 1KiB, 1MB, 1MiB, 1G (default 64K)\n"
     "Example: simd-r-drive data.bin read photo --buffer-size 1MiB > photo.jpg\n"},
    {"write", NULL, cmd_write, 1, 2, NEW_STORE_OPTS, "write KEY [VALUE] [--layout aligned64|unaligned]",
     "Stores VALUE under KEY (VALUE may start with '-': write temp -5). Without VALUE,\n"
     "streams standard input (a pipe or file) into the entry in constant memory. The key's\n"
     "name is kept beside it, so 'list' and 'export' can show it. Creates the store if\n"
     "missing, in the aligned64 layout unless --layout unaligned (for simd-r-drive <= 0.13).\n"
     "An empty value cannot be stored. Example: tar c dir | simd-r-drive data.bin write dir.tar\n"},
    {"copy", NULL, cmd_copy, 2, 2, NEW_STORE_OPTS, "copy KEY TARGET [--layout aligned64|unaligned]",
     "Appends the entry of KEY (and its name) to the store file TARGET, created if missing\n"
     "(in the aligned64 layout unless --layout unaligned).\n"
     "Example: simd-r-drive data.bin copy greeting backup.bin\n"},
    {"move", NULL, cmd_move, 2, 2, NEW_STORE_OPTS, "move KEY TARGET [--layout aligned64|unaligned]",
     "Copies the entry of KEY (and its name) to TARGET (created if missing, as copy), then\n"
     "deletes it here.\n"
     "Example: simd-r-drive data.bin move greeting archive.bin\n"},
    {"rename", NULL, cmd_rename, 2, 2, 0, "rename OLD_KEY NEW_KEY",
     "Stores the value under NEW_KEY and deletes OLD_KEY (the name moves too).\n"
     "Example: simd-r-drive data.bin rename photo photo-2024\n"},
    {"delete", NULL, cmd_delete, 1, 1, 0, "delete KEY",
     "Deletes KEY and its name (appends tombstones; 'compact' reclaims the space).\n"
     "Example: simd-r-drive data.bin delete photo-2024\n"},
    {"compact", NULL, cmd_compact, 0, 0, 0, "compact",
     "Rewrites the file with only the live entries (names included); a crash leaves the\n"
     "old or the new file whole. Shows the share written on a terminal.\n"
     "Example: simd-r-drive data.bin compact\n"},
    {"info", NULL, cmd_info, 0, 0, CLI_OPT_JSON | CLI_OPT_DETAILED, "info [--json]",
     "File, total size, active entries (how many are named), compaction savings, layout.\n"
     "Example: simd-r-drive data.bin info --json\n"},
    {"metadata", NULL, cmd_metadata, 1, 1, CLI_OPT_JSON, "metadata KEY [--json]",
     "Payload size, offsets, key hash, checksum and its validity for the entry of KEY.\n"
     "Example: simd-r-drive data.bin metadata greeting\n"},
    {"check", NULL, cmd_check, 0, 0, CLI_OPT_JSON, "check [--json]",
     "Verifies every entry's chain link and CRC-32, read-only; lists each bad entry.\n"
     "Exit 0 only if the file is sound. Example: simd-r-drive data.bin check\n"},
    {"list", "dump", cmd_list, 0, 0, CLI_OPT_JSON, "list [--json]",
     "One line per live entry, newest first: key hash (hex), payload offset, size, and\n"
     "the key's name when it was written by this tool (in a store simdr-server wrote, the\n"
     "key its record carries). Alias: dump.\n"
     "Example: simd-r-drive data.bin list\n"},
    {"import", NULL, cmd_import, 1, 1, NEW_STORE_OPTS, "import DIR [--layout aligned64|unaligned]",
     "Stores every regular file under DIR (recursively, symlinks not followed; FIFOs,\n"
     "sockets and devices are counted and never opened) with its path relative to DIR as\n"
     "key, and keeps the names. Empty files are skipped with a warning (an empty value\n"
     "cannot be stored). Unreadable files and directories are reported and the rest is\n"
     "imported (exit 1). Creates the store if missing.\n"
     "Example: simd-r-drive data.bin import ./site\n"},
    {"export", NULL, cmd_export, 1, -1, CLI_OPT_BUFFER | CLI_OPT_FORCE, "export DIR [KEY...] [--force]",
     "Writes each value to DIR/KEY, creating directories; without KEYs, every value whose\n"
     "name the store keeps. Keys that are absolute, end with '/' or contain a '..', '.'\n"
     "or empty component are refused. Each file is written beside its name and renamed\n"
     "into place when complete (a full disk leaves no partial file). An existing file is\n"
     "overwritten only after a 'y' on the terminal, or with --force (without a terminal\n"
     "it is left alone and the export fails); a directory, the store itself, its side\n"
     "file and its hint are never replaced.\n"
     "  -f, --force             overwrite existing files\n"
     "Example: simd-r-drive data.bin export ./restore\n"},
};

static const char help_text[] =
    "simd-r-drive - read and write simd-r-drive storage files\n"
    "\n"
    "Usage: simd-r-drive <storage-file> <command> [args] [options]\n"
    "       simd-r-drive --help | --version\n"
    "\n"
    "Commands:\n"
    "  read KEY [--buffer-size SIZE]  write the value to stdout, exactly (binary safe),\n"
    "                                 in SIZE chunks (4096, 32K, 1MB, 1G; default 64K)\n"
    "  write KEY [VALUE]              store VALUE, or stream standard input when VALUE\n"
    "                                 is omitted (constant memory; stdin must be a pipe\n"
    "                                 or file); the key's name is kept for list/export\n"
    "  copy KEY TARGET                copy the entry into the store file TARGET\n"
    "  move KEY TARGET                copy the entry into TARGET, then delete it here\n"
    "  rename OLD_KEY NEW_KEY         store the value under NEW_KEY, delete OLD_KEY\n"
    "  delete KEY                     delete the key (appends a tombstone)\n"
    "  compact                        rewrite the file with only the live entries\n"
    "  info [--json]                  file, total size, active entries, compaction\n"
    "                                 savings, layout\n"
    "  metadata KEY [--json]          payload size, offsets, key hash, checksum and\n"
    "                                 its validity for one entry\n"
    "  check [--json]                 verify every entry's chain link and CRC; exit 0\n"
    "                                 only if the file is sound\n"
    "  list [--json]                  (alias: dump) one line per live entry: key hash\n"
    "                                 (hex), payload offset, size, name; newest first\n"
    "  import DIR                     store every regular file under DIR, recursively,\n"
    "                                 with its path relative to DIR as key\n"
    "  export DIR [KEY...]            write each value to DIR/KEY (keys that are\n"
    "                                 absolute or contain '..', '.' or '//' are\n"
    "                                 refused); without\n"
    "                                 KEYs, every named value; asks before overwriting\n"
    "  help COMMAND                   help for one command (also: COMMAND --help)\n"
    "\n"
    "Options (accepted anywhere on the line; write's VALUE is taken as typed):\n"
    "  --key-hex            KEY arguments are hex (e.g. 62696e00ff), for binary keys\n"
    "  --json               JSON output (info, metadata, list, check)\n"
    "  -b, --buffer-size SIZE  chunk size for read and export (4096, 4096B, 32K, 1KiB,\n"
    "                       1MB, 1MiB, 1G)\n"
    "  -f, --force          export: overwrite existing files\n"
    "  --layout L           new stores: aligned64 (default) or unaligned (readable by\n"
    "                       simd-r-drive 0.4-0.13)\n"
    "  -q, --quiet          no confirmation messages on stderr\n"
    "  --detailed           accepted by info for compatibility (savings are always shown)\n"
    "  --                   end of options (for keys that start with '-')\n"
    "  -h, --help           this text; after a command, that command's help\n"
    "  -V, --version        program and library version\n"
    "\n"
    "Read-only commands (read, info, metadata, check, list, export) never create or\n"
    "modify the storage file; a missing file is an error. write and import create\n"
    "the file if needed; copy and move create TARGET if needed.\n"
    "Values go to stdout; messages, errors and progress bars go to stderr (progress\n"
    "only when stderr is a terminal). If the reader of stdout goes away (| head),\n"
    "the command stops quietly and exits 0.\n"
    "\n"
    "Exit status: 0 success, 1 operation failed or key not found (check: file\n"
    "damaged), 2 usage error.\n"
    "\n"
    "Examples:\n"
    "  simd-r-drive data.bin write greeting \"hello, world\"\n"
    "  cat photo.jpg | simd-r-drive data.bin write photo\n"
    "  simd-r-drive data.bin read greeting\n"
    "  simd-r-drive data.bin read photo --buffer-size 1MB > photo.jpg\n"
    "  simd-r-drive data.bin copy greeting other.bin\n"
    "  simd-r-drive data.bin move greeting other.bin\n"
    "  simd-r-drive data.bin rename photo photo-2024\n"
    "  simd-r-drive data.bin delete photo-2024\n"
    "  simd-r-drive data.bin compact\n"
    "  simd-r-drive data.bin info\n"
    "  simd-r-drive data.bin info --json\n"
    "  simd-r-drive data.bin metadata greeting --json\n"
    "  simd-r-drive data.bin check\n"
    "  simd-r-drive data.bin list --json\n"
    "  simd-r-drive data.bin dump\n"
    "  simd-r-drive data.bin --key-hex write 62696e00ff \"value of a binary key\"\n"
    "  simd-r-drive data.bin --key-hex read 62696e00ff\n"
    "  simd-r-drive data.bin import ./photos\n"
    "  simd-r-drive data.bin export ./out 2024/a.jpg 2024/b.jpg\n";

static const struct command *find_command(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const struct command *c = &commands[i];
        if (strcmp(c->name, name) == 0 || (c->alias && strcmp(c->alias, name) == 0))
            return c;
    }
    return NULL;
}

static int command_help(const struct command *c) {
    cli_out_printf("Usage: simd-r-drive <storage-file> %s\n\n", c->synopsis);
    if (c->alias)
        cli_out_printf("(also: %s)\n", c->alias);
    cli_out_printf("%s", c->help);
    return CLI_OK;
}

static int run(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse_args(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    /* "help [COMMAND]", "COMMAND --help" and "FILE COMMAND --help" */
    const char *about = NULL;
    if (a.store_path && strcmp(a.store_path, "help") == 0) {
        /* "help help": the general help lists help as a command too */
        if (!a.command || strcmp(a.command, "help") == 0) {
            cli_out_write(help_text, sizeof help_text - 1);
            return CLI_OK;
        }
        about = a.command;
    } else if (a.help) {
        about = a.command ? a.command : a.store_path;
        if (about && !find_command(about))
            about = NULL;
        if (!about) {
            cli_out_write(help_text, sizeof help_text - 1);
            return CLI_OK;
        }
    }
    if (about) {
        const struct command *c = find_command(about);
        if (!c)
            return cli_usage_error("help: unknown command '%s'", about);
        return command_help(c);
    }
    if (a.version) {
        cli_out_printf("simd-r-drive %s (libsimdr %s)\n", SIMDR_VERSION_STRING, simdr_version());
        return CLI_OK;
    }
    if (!a.store_path)
        return cli_usage_error("missing <storage-file> and <command>\n"
                               "Usage: simd-r-drive <storage-file> <command> [args]");
    if (!a.command)
        return cli_usage_error("missing <command> after '%s'\n"
                               "Usage: simd-r-drive <storage-file> <command> [args]",
                               a.store_path);
    const struct command *c = find_command(a.command);
    if (!c)
        return cli_usage_error("unknown command '%s'", a.command);
    if (a.argc < c->min_args || (c->max_args >= 0 && a.argc > c->max_args))
        return cli_usage_error("%s: wrong number of arguments\nUsage: simd-r-drive "
                               "<storage-file> %s",
                               c->name, c->synopsis);
    unsigned stray = a.given & ~c->opts;
    if (stray)
        return cli_usage_error("%s: option %s does not apply\nUsage: simd-r-drive "
                               "<storage-file> %s",
                               c->name,
                               stray & CLI_OPT_JSON     ? "--json"
                               : stray & CLI_OPT_BUFFER ? "--buffer-size"
                               : stray & CLI_OPT_FORCE  ? "--force"
                               : stray & CLI_OPT_LAYOUT ? "--layout"
                                                        : "--detailed",
                               c->synopsis);
    return c->run(&a);
}

/* A standard descriptor closed by the caller ("2>&-", "<&-") would be the
 * number the next open() returns, so the store file itself would become
 * stderr or stdout and messages or values would be written into it. Each
 * closed one is filled with /dev/null opened the wrong way round, so reading
 * stdin or writing stdout fails (EBADF) and says so instead of passing for
 * empty input or output that went somewhere. Returns -1 if one cannot be
 * filled. */
static int fill_closed_standard_fds(void) {
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int got = open("/dev/null", fd == STDIN_FILENO ? O_WRONLY : O_RDONLY);
        if (got != fd) {
            if (got >= 0)
                close(got);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (fill_closed_standard_fds() != 0)
        return CLI_FAIL;
    /* Past a file size limit (ulimit -f) a write must fail with EFBIG and be
     * reported like a full disk, not kill the tool halfway through. */
    signal(SIGXFSZ, SIG_IGN);
    /* A closed stdout pipe must end the command quietly: with SIGPIPE
     * ignored, writes fail with EPIPE, which the output layer treats as the
     * end of the reader's interest (see cli_out_finish). */
    signal(SIGPIPE, SIG_IGN);
    int rc = run(argc, argv);
    int out = cli_out_finish();
    cli_interrupts_finish(); /* ends here by the signal that interrupted a write */
    return rc != CLI_OK ? rc : out;
}
