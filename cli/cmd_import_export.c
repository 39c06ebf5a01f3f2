/*
 * cmd_import_export.c - bulk transfer between a directory tree and a store:
 * import stores every regular file under a directory with its relative path
 * as key; export writes named values back to files under a directory, with
 * the key as relative path (keys that would escape the directory are
 * refused before anything is written).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* ------------------------------------------------------------------------ */
/* import DIR                                                                */
/* ------------------------------------------------------------------------ */

struct file_list {
    char **rel;     /* relative paths, '/'-separated: the keys */
    uint64_t *size;
    size_t n, cap;
    uint64_t total;
    uint64_t skipped;  /* neither regular file nor directory (symlinks, fifos...) */
    uint64_t unreadable; /* directories and entries that could not be read */
    dev_t skip_dev;    /* the store file itself, if it lies inside DIR */
    ino_t skip_ino;
    int have_skip;
    dev_t side_dev;    /* ... and the side file the library keeps beside it */
    ino_t side_ino;
    int have_side;
};

static void file_list_free(struct file_list *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->rel[i]);
    free(l->rel);
    free(l->size);
}

static int file_list_add(struct file_list *l, const char *rel, uint64_t size) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **r = realloc(l->rel, cap * sizeof *r);
        if (!r)
            return -1;
        l->rel = r;
        uint64_t *s = realloc(l->size, cap * sizeof *s);
        if (!s)
            return -1;
        l->size = s;
        l->cap = cap;
    }
    l->rel[l->n] = strdup(rel);
    if (!l->rel[l->n])
        return -1;
    l->size[l->n++] = size;
    l->total += size;
    return 0;
}

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    size_t o = la;
    if (la && a[la - 1] != '/')
        p[o++] = '/';
    memcpy(p + o, b, lb + 1);
    return p;
}

/* Opens rel ('/'-separated, relative) below the directory rootfd one
 * component at a time, never following a symbolic link: the tree is read
 * through descriptors, so paths longer than PATH_MAX work and a directory
 * swapped for a link while the import runs cannot lead outside the tree. */
static int open_beneath(int rootfd, const char *rel, int flags) {
    int cur = rootfd;
    const char *p = rel;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        char comp[NAME_MAX + 1];
        if (n == 0 || n > NAME_MAX) {
            if (cur != rootfd)
                close(cur);
            errno = n ? ENAMETOOLONG : ENOENT;
            return -1;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        int fd = openat(cur, comp, slash ? O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
                                         : flags | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        if (cur != rootfd)
            close(cur);
        if (fd < 0) {
            errno = e;
            return -1;
        }
        if (!slash)
            return fd;
        cur = fd;
        p = slash + 1;
    }
}

struct dir_item {
    char *name;
    int is_dir;
    uint64_t size;
};

static int cmp_items(const void *x, const void *y) {
    return strcmp(((const struct dir_item *)x)->name, ((const struct dir_item *)y)->name);
}

/* Collects regular files below rootfd/rel, names sorted so imports are
 * reproducible. Symbolic links, FIFOs, sockets and devices are counted and
 * never opened (a FIFO would block the import forever). A directory or
 * entry that cannot be read is reported and counted in l->unreadable, and
 * the walk goes on. Only one directory is open at a time, so any depth
 * works. Returns 0, or -1 when out of memory. */
static int walk(struct file_list *l, int rootfd, const char *rel) {
    char q[512];
    cli_quote(q, sizeof q, rel[0] ? rel : ".");
    int dfd = rel[0] ? open_beneath(rootfd, rel, O_RDONLY | O_DIRECTORY)
                     : openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        cli_err("import: cannot read directory %s: %s", q, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        l->unreadable++;
        return 0;
    }
    struct dir_item *items = NULL;
    size_t n = 0, cap = 0;
    int ret = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
            char *child_rel = rel[0] ? join(rel, de->d_name) : strdup(de->d_name);
            char cq[512];
            cli_quote(cq, sizeof cq, child_rel ? child_rel : de->d_name);
            cli_err("import: %s: %s", cq, strerror(errno));
            free(child_rel);
            l->unreadable++;
            errno = 0;
            continue;
        }
        int is_dir = S_ISDIR(sb.st_mode);
        if (S_ISREG(sb.st_mode)) {
            if ((l->have_skip && sb.st_dev == l->skip_dev && sb.st_ino == l->skip_ino) ||
                (l->have_side && sb.st_dev == l->side_dev && sb.st_ino == l->side_ino))
                continue; /* importing the store into itself would never end well */
        } else if (!is_dir) {
            l->skipped++;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            struct dir_item *ni = realloc(items, cap * sizeof *ni);
            if (!ni) {
                ret = -1;
                break;
            }
            items = ni;
        }
        if (!(items[n].name = strdup(de->d_name))) {
            ret = -1;
            break;
        }
        items[n].is_dir = is_dir;
        items[n].size = (uint64_t)sb.st_size;
        n++;
        errno = 0;
    }
    if (ret == 0 && errno != 0) {
        cli_err("import: reading directory %s: %s", q, strerror(errno));
        l->unreadable++;
    } else if (ret != 0) {
        cli_err("out of memory");
    }
    closedir(d);
    if (ret == 0)
        qsort(items, n, sizeof *items, cmp_items);
    for (size_t i = 0; i < n && ret == 0; i++) {
        char *child_rel = rel[0] ? join(rel, items[i].name) : strdup(items[i].name);
        if (!child_rel) {
            cli_err("out of memory");
            ret = -1;
        } else if (items[i].is_dir) {
            ret = walk(l, rootfd, child_rel);
        } else if (file_list_add(l, child_rel, items[i].size) != 0) {
            cli_err("out of memory");
            ret = -1;
        }
        free(child_rel);
    }
    for (size_t i = 0; i < n; i++)
        free(items[i].name);
    free(items);
    return ret;
}

/* Opens a file the walk found, without blocking and without following a
 * link: if it was replaced by a FIFO or a device since, it is refused here
 * instead of hanging the import. */
static int open_import_file(int rootfd, const char *rel) {
    int fd = open_beneath(rootfd, rel, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return -1;
    struct stat sb;
    int flags, e = 0;
    if (fstat(fd, &sb) != 0)
        e = errno;
    else if (!S_ISREG(sb.st_mode))
        e = EINVAL; /* told as "no longer a regular file" */
    else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        e = errno;
    if (e) {
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int cmd_import(const struct cli_args *a) {
    const char *dir = a->argv[0];
    char dq[512], fq[512];
    cli_quote(dq, sizeof dq, dir);
    cli_quote(fq, sizeof fq, a->store_path);
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        cli_err("import: %s: %s", dq, strerror(errno));
        return CLI_FAIL;
    }
    if (!S_ISDIR(sb.st_mode)) {
        cli_err("import: %s is not a directory", dq);
        return CLI_FAIL;
    }
    struct file_list l;
    memset(&l, 0, sizeof l);
    simdr_store *st = NULL;
    int created = 0;
    int ret = cli_open_store_created(a, a->store_path, SIMDR_OPEN_CREATE, &st, &created);
    if (ret != CLI_OK)
        return ret;
    struct stat ss;
    if (stat(a->store_path, &ss) == 0) {
        l.have_skip = 1;
        l.skip_dev = ss.st_dev;
        l.skip_ino = ss.st_ino;
    }
    char side[4200];
    snprintf(side, sizeof side, "%s.simdr", a->store_path);
    if (stat(side, &ss) == 0) {
        l.have_side = 1;
        l.side_dev = ss.st_dev;
        l.side_ino = ss.st_ino;
    }
    int rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        cli_err("import: cannot read directory %s: %s", dq, strerror(errno));
        cli_close_store_created(st, a->store_path, created, 1);
        return CLI_FAIL;
    }
    if (walk(&l, rootfd, "") != 0) {
        close(rootfd);
        file_list_free(&l);
        cli_close_store_created(st, a->store_path, created, 1);
        return CLI_FAIL;
    }
    char label[600];
    snprintf(label, sizeof label, "import %s", dq);
    struct cli_progress *prog = cli_progress_start(label, l.total, CLI_PROGRESS_MIN);
    uint64_t done = 0, imported = 0, failed = 0, bytes = 0, empty = 0, unnamed = 0;
    cli_interrupts_catch();
    for (size_t i = 0; i < l.n; i++) {
        if (cli_interrupted()) {
            cli_err("import: interrupted");
            failed += l.n - i;
            break;
        }
        char q[512];
        cli_quote(q, sizeof q, l.rel[i]);
        int fd = open_import_file(rootfd, l.rel[i]);
        if (fd < 0) {
            cli_err("import: cannot open %s: %s", q,
                    errno == EINVAL ? "no longer a regular file" : strerror(errno));
            failed++;
            continue;
        }
        cli_progress_base(prog, done);
        int read_errno = 0;
        uint64_t got = 0;
        int rc = cli_put_from_fd(st, l.rel[i], strlen(l.rel[i]), fd, prog, &read_errno, &got);
        close(fd);
        done += l.size[i];
        char what[1100];
        snprintf(what, sizeof what, "%s: import %s", fq, q);
        if (rc == SIMDR_OK) {
            /* Stored: a name that cannot follow (a full disk) leaves it
             * imported but unnamed, which export cannot find; counted apart. */
            if (cli_name_put_or_warn(st, l.rel[i], strlen(l.rel[i]), what) != SIMDR_OK)
                unnamed++;
            imported++;
            bytes += got; /* what was stored, even if the file changed size meanwhile */
            continue;
        }
        if (rc == SIMDR_EINVAL && got == 0 && !read_errno) {
            /* The format cannot hold an empty value (it would read as a
             * delete); an empty file is a normal thing to find in a tree.
             * Empty means nothing to read, not a size of 0: procfs files
             * say 0 and hold bytes. */
            cli_err("import: skipping %s: empty file (an empty value cannot be stored)", q);
            empty++;
            continue;
        }
        failed++;
        if (rc == SIMDR_EINVAL) {
            cli_explain_refused_value(what);
        } else if (rc == SIMDR_ESOURCE && cli_interrupted()) {
            continue; /* the next turn says it and stops */
        } else if (rc == SIMDR_ESOURCE && read_errno) {
            cli_err("%s: reading the file: %s (nothing was stored)", what, strerror(read_errno));
        } else {
            cli_fail_simdr(rc, "%s", what);
            if (rc == SIMDR_ENOSPC || rc == SIMDR_EFAILED || rc == SIMDR_EIO) {
                /* the store itself is in trouble: the remaining files would
                 * fail the same way */
                failed += l.n - i - 1;
                break;
            }
        }
    }
    cli_progress_end(prog);
    char hb[32];
    cli_format_bytes(hb, sizeof hb, bytes);
    cli_note(a, "Imported %" PRIu64 " of %zu %s (%s) from %s into %s", imported, l.n,
             cli_plural(l.n, "file", "files"), hb, dq, fq);
    if (empty)
        cli_note(a, "Skipped %" PRIu64 " empty %s (an empty value cannot be stored)", empty,
                 cli_plural(empty, "file", "files"));
    if (l.skipped)
        cli_note(a, "Skipped %" PRIu64 " %s that %s not regular files (symlinks, devices...)",
                 l.skipped, cli_plural(l.skipped, "entry", "entries"),
                 cli_plural(l.skipped, "is", "are"));
    if (failed) {
        cli_err("import: %" PRIu64 " %s not imported", failed,
                cli_plural(failed, "file was", "files were"));
        ret = CLI_FAIL;
    }
    if (unnamed) { /* stored, but export cannot find them: not the import asked for */
        cli_err("import: %" PRIu64 " %s imported without %s name (see above)", unnamed,
                cli_plural(unnamed, "file was", "files were"), cli_plural(unnamed, "its", "their"));
        ret = CLI_FAIL;
    }
    if (l.unreadable) {
        cli_err("import: %" PRIu64 " %s could not be read (see above); what %s held was "
                "not imported",
                l.unreadable, cli_plural(l.unreadable, "entry", "entries"),
                cli_plural(l.unreadable, "it", "they"));
        ret = CLI_FAIL;
    }
    close(rootfd);
    file_list_free(&l);
    int crc = cli_close_store_created(st, a->store_path, created, ret != CLI_OK);
    return ret != CLI_OK ? ret : crc;
}

/* ------------------------------------------------------------------------ */
/* export DIR KEY...                                                         */
/* ------------------------------------------------------------------------ */

/* A key may become a path only if it stays inside DIR and names one file
 * no other key names: relative, no "..", "." or empty component, no NUL
 * byte, not naming a directory. */
static const char *unsafe_path_reason(const void *data, size_t len) {
    const char *s = data;
    if (len == 0)
        return "empty key";
    if (memchr(s, '\0', len))
        return "contains a zero byte";
    if (s[0] == '/')
        return "absolute path";
    if (s[len - 1] == '/')
        return "ends with '/'";
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != '/')
            j++;
        if (j - i == 2 && s[i] == '.' && s[i + 1] == '.')
            return "contains a '..' component";
        /* "a/./b" and "a//b" would be the file of "a/b": two keys, one file */
        if (j - i == 1 && s[i] == '.')
            return "contains a '.' component";
        if (j == i)
            return "contains an empty component ('//')";
        if (j - i > NAME_MAX)
            return "a component is longer than a file name can be";
        i = j + 1;
    }
    return NULL;
}

/* Opens (creating as needed, like mkdir -p) the directory that will hold
 * the file name below rootfd, through descriptors so names longer than
 * PATH_MAX work. *leaf is set to the last component. A file where a
 * directory is needed (keys "a" and "a/b") fails with ENOTDIR, and
 * *blocker (when not NULL) gets the length of the prefix of name that is in
 * the way. */
static int open_export_parent(int rootfd, const char *name, const char **leaf, size_t *blocker) {
    int cur = rootfd;
    const char *p = name;
    for (;;) {
        const char *slash = strchr(p, '/');
        if (!slash) {
            *leaf = p;
            return cur == rootfd ? dup(rootfd) : cur;
        }
        size_t n = (size_t)(slash - p);
        char comp[NAME_MAX + 1];
        int fd = -1, e = ENAMETOOLONG;
        if (n <= NAME_MAX) {
            memcpy(comp, p, n);
            comp[n] = '\0';
            if (mkdirat(cur, comp, 0777) != 0 && errno != EEXIST)
                e = errno;
            else if ((fd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
                e = errno;
        }
        if (cur != rootfd)
            close(cur);
        if (fd < 0) {
            if (blocker)
                *blocker = (size_t)(slash - name);
            errno = e;
            return -1;
        }
        cur = fd;
        p = slash + 1;
    }
}

/* mkdir -p dir, then opens it. */
static int open_export_dir(const char *dir) {
    char *path = strdup(dir);
    if (!path)
        return -1;
    for (char *p = path; *p; p++) {
        if (p == path || (p[1] != '/' && p[1] != '\0') || *p == '/')
            continue;
        /* p is the last byte of a component */
        char c = p[1];
        p[1] = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            free(path);
            return -1;
        }
        p[1] = c;
    }
    free(path);
    return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Asks before an existing file is overwritten: on a terminal the user says
 * y or n; without one the answer is no, said once per file. */
static int may_overwrite(const char *path) {
    if (!isatty(STDIN_FILENO) || !isatty(STDERR_FILENO)) {
        cli_err("export: %s exists; not overwritten (use --force to overwrite)", path);
        return 0;
    }
    cli_progress_clear_line();
    fprintf(stderr, "simd-r-drive: overwrite %s? [y/N] ", path);
    fflush(stderr);
    char answer[16] = "";
    if (!fgets(answer, sizeof answer, stdin))
        answer[0] = '\0';
    if (answer[0] == 'y' || answer[0] == 'Y')
        return 1;
    cli_err("export: %s not overwritten", path);
    return 0;
}

/* The files an export must never replace: the store it reads, its side
 * file and its index hint (a key named like the store, exported into the
 * store's directory with --force, renamed its value over the store). */
struct export_guard {
    int n;
    dev_t dev[3];
    ino_t ino[3];
};

static void export_guard_init(struct export_guard *g, const char *store_path) {
    g->n = 0;
    const char *suffixes[] = {"", ".simdr", ".hint"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char *path = malloc(strlen(store_path) + 8);
        struct stat sb;
        if (!path)
            continue;
        sprintf(path, "%s%s", store_path, suffixes[i]);
        if (stat(path, &sb) == 0) {
            g->dev[g->n] = sb.st_dev;
            g->ino[g->n] = sb.st_ino;
            g->n++;
        }
        free(path);
    }
}

/* What the file sb is of the store's own files, or NULL. */
static const char *export_guarded(const struct export_guard *g, const struct stat *sb) {
    static const char *const what[] = {"the store file itself", "the store's side file",
                                       "the store's index hint"};
    for (int i = 0; i < g->n; i++)
        if (sb->st_dev == g->dev[i] && sb->st_ino == g->ino[i])
            return what[i < 3 ? i : 0];
    return NULL;
}

/* Writes one value to rootfd/name: into a new temporary file beside it,
 * renamed over the name only when complete, so a full disk or a damaged
 * value never leaves a truncated file or destroys the file it replaces.
 * Returns CLI_OK, or CLI_FAIL after reporting. */
static int export_one(const struct cli_args *a, const struct export_guard *guard, int rootfd,
                      const char *name, const char *shown, const simdr_entry *e, const char *q) {
    const char *leaf;
    size_t blocker = 0;
    int pfd = open_export_parent(rootfd, name, &leaf, &blocker);
    if (pfd < 0) {
        int err = errno;
        char *prefix = strndup(name, blocker);
        char bq[512];
        cli_quote(bq, sizeof bq, prefix ? prefix : name);
        free(prefix);
        if (err == ENOTDIR || err == EEXIST)
            cli_err("export: cannot write %s: %s is in the way and is not a directory", shown, bq);
        else
            cli_err("export: cannot create the directory %s for %s: %s", bq, shown, strerror(err));
        return CLI_FAIL;
    }
    struct stat sb;
    int ret = CLI_OK;
    int into_existing = 0; /* a FIFO or device in the way is written into, not replaced */
    if (fstatat(pfd, leaf, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
        into_existing = S_ISFIFO(sb.st_mode) || S_ISCHR(sb.st_mode);
        const char *own = export_guarded(guard, &sb);
        if (own) {
            /* Never, not even with --force: export only reads the store. */
            cli_err("export: cannot write %s: it is %s; not overwritten", shown, own);
            ret = CLI_FAIL;
        } else if (S_ISDIR(sb.st_mode)) {
            cli_err("export: cannot write %s: a directory of that name is in the way (another "
                    "key names a file inside it)",
                    shown);
            ret = CLI_FAIL;
        } else if (!a->force && !may_overwrite(shown)) {
            ret = CLI_FAIL; /* told why inside */
        }
    }
    char tmp[64];
    int fd = -1;
    if (ret == CLI_OK && into_existing) {
        fd = openat(pfd, leaf, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            cli_err("export: cannot open %s: %s", shown, strerror(errno));
            ret = CLI_FAIL;
        }
    }
    for (unsigned i = 0; ret == CLI_OK && fd < 0 && i < 100; i++) {
        snprintf(tmp, sizeof tmp, ".simd-r-drive-export.%ld.%u", (long)getpid(), i);
        fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) {
            cli_err("export: cannot create %s: %s", shown, strerror(errno));
            ret = CLI_FAIL;
        }
    }
    if (ret == CLI_OK && fd < 0) {
        cli_err("export: cannot create %s: %s", shown, strerror(EEXIST));
        ret = CLI_FAIL;
    }
    if (ret == CLI_OK) {
        uint64_t size = simdr_entry_size(e);
        char label[600];
        snprintf(label, sizeof label, "export %s", q);
        struct cli_progress *prog = size >= CLI_PROGRESS_MIN ? cli_progress_start(label, size, 0) : NULL;
        ret = cli_interrupted() ? CLI_FAIL : cli_write_entry(e, fd, shown, a->buffer_size, prog);
        cli_progress_end(prog);
        if (close(fd) != 0 && ret == CLI_OK) {
            cli_err("writing %s: %s", shown, strerror(errno));
            ret = CLI_FAIL;
        }
        if (!into_existing) {
            if (ret == CLI_OK && renameat(pfd, tmp, pfd, leaf) != 0) {
                cli_err("export: cannot create %s: %s", shown, strerror(errno));
                ret = CLI_FAIL;
            }
            if (ret != CLI_OK)
                unlinkat(pfd, tmp, 0);
        }
    }
    close(pfd);
    return ret;
}

/* Fills *keys with every live key that has a name record and can be a file
 * name. Names that cannot (absolute, "..") are reported and counted in
 * *failed; live entries without a name are counted in *unnamed. */
static int named_keys(simdr_store *st, const char *fq, struct cli_key **keys, int *nkeys,
                      uint64_t *unnamed, uint64_t *failed) {
    struct cli_names *names = NULL;
    int rc = cli_names_load(st, &names);
    if (rc != SIMDR_OK)
        return cli_fail_simdr(rc, "%s: reading key names", fq);
    uint64_t records = cli_names_records(names);
    uint64_t live = cli_names_live(names, st);
    size_t cap = (size_t)records + 1, n = 0, cursor = 0;
    struct cli_key *k = calloc(cap, sizeof *k);
    uint64_t hash;
    const void *name;
    size_t len;
    int ret = k ? CLI_OK : (cli_err("out of memory"), CLI_FAIL);
    while (ret == CLI_OK && cli_names_each(names, &cursor, &hash, &name, &len)) {
        simdr_entry *e = NULL;
        int grc = simdr_get_hashed(st, hash, &e);
        simdr_entry_release(e);
        if (grc == SIMDR_NOTFOUND)
            continue; /* the name of a deleted key */
        /* Anything else (a damaged value) is exported, so the loop that
         * writes the files reports it and the export fails: skipping it
         * would pass a damaged store off as a complete export. */
        unsigned char *copy = malloc(len + 1);
        if (!copy) {
            ret = (cli_err("out of memory"), CLI_FAIL);
            break;
        }
        memcpy(copy, name, len);
        copy[len] = '\0';
        const char *why = unsafe_path_reason(copy, len);
        if (why) {
            char q[512];
            cli_quote_bytes(q, sizeof q, copy, len);
            cli_err("export: key %s cannot be used as a file name: %s; not exported", q, why);
            (*failed)++;
            free(copy);
            continue;
        }
        k[n].text = (const char *)copy;
        k[n].owned = copy;
        k[n].data = copy;
        k[n].len = len;
        n++;
    }
    uint64_t count = simdr_count(st);
    *unnamed = count > records + live ? count - records - live : 0;
    cli_names_free(names);
    free(*keys);
    *keys = k;
    *nkeys = (int)n;
    return ret;
}

int cmd_export(const struct cli_args *a) {
    const char *dir = a->argv[0];
    int nkeys = a->argc - 1;
    char dq[512], fq[512];
    cli_quote(dq, sizeof dq, dir);
    cli_quote(fq, sizeof fq, a->store_path);
    struct cli_key *keys = calloc((size_t)nkeys + 1, sizeof *keys);
    if (!keys) {
        cli_err("out of memory");
        return CLI_FAIL;
    }
    int ret = CLI_OK;
    /* Every key is checked before anything is written. A key given twice
     * is exported once: its second file would be its first, found there. */
    int given = nkeys;
    nkeys = 0;
    for (int arg = 0; arg < given && ret == CLI_OK; arg++) {
        int i = nkeys;
        ret = cli_key_from_arg(a, a->argv[1 + arg], &keys[i]);
        if (ret != CLI_OK)
            break;
        int again = 0;
        for (int j = 0; j < i && !again; j++)
            again = keys[j].len == keys[i].len && memcmp(keys[j].data, keys[i].data, keys[i].len) == 0;
        if (again) {
            cli_key_free(&keys[i]);
            continue;
        }
        nkeys++;
        const char *why = unsafe_path_reason(keys[i].data, keys[i].len);
        if (why) {
            char q[512];
            cli_quote(q, sizeof q, keys[i].text);
            ret = cli_usage_error("export: key %s cannot be used as a file name: %s", q, why);
        }
    }
    simdr_store *st = NULL;
    if (ret == CLI_OK)
        ret = cli_open_store(a, a->store_path, SIMDR_OPEN_READONLY, &st);
    uint64_t exported = 0, failed = 0, bytes = 0, unnamed = 0;
    if (ret == CLI_OK && nkeys == 0) {
        /* No keys given: every value this tool can name. */
        ret = named_keys(st, fq, &keys, &nkeys, &unnamed, &failed);
    }
    uint64_t asked = (uint64_t)nkeys + failed; /* names that cannot be files count too */
    struct export_guard guard;
    export_guard_init(&guard, a->store_path);
    int rootfd = -1; /* DIR, created when the first file is written */
    cli_interrupts_catch(); /* Ctrl-C removes the unfinished temporary file first */
    for (int i = 0; i < nkeys && ret == CLI_OK; i++) {
        if (cli_interrupted()) {
            cli_err("export: interrupted");
            failed += (uint64_t)(nkeys - i);
            break;
        }
        char q[512];
        cli_quote(q, sizeof q, keys[i].text);
        simdr_entry *e = NULL;
        int rc = simdr_get(st, keys[i].data, keys[i].len, &e);
        if (rc != SIMDR_OK) {
            if (rc == SIMDR_NOTFOUND)
                cli_err("%s: key %s not found", fq, q);
            else
                cli_fail_simdr(rc, "%s: reading key %s", fq, q);
            failed++;
            continue;
        }
        /* keys[i].data has no NUL (checked), so it can be a C string */
        char *name = malloc(keys[i].len + 1);
        char *path = NULL;
        if (name) {
            memcpy(name, keys[i].data, keys[i].len);
            name[keys[i].len] = '\0';
            path = join(dir, name);
        }
        char shown[512];
        if (!path) {
            cli_err("out of memory");
            failed++;
        } else {
            cli_quote(shown, sizeof shown, path);
            if (rootfd < 0 && (rootfd = open_export_dir(dir)) < 0) {
                cli_err("export: cannot create the directory %s: %s", dq, strerror(errno));
                ret = CLI_FAIL;
                failed++;
            } else if (export_one(a, &guard, rootfd, name, shown, e, q) == CLI_OK) {
                exported++;
                bytes += simdr_entry_size(e);
            } else {
                failed++;
            }
        }
        free(path);
        free(name);
        simdr_entry_release(e);
    }
    if (ret == CLI_OK) {
        char hb[32];
        cli_format_bytes(hb, sizeof hb, bytes);
        cli_note(a, "Exported %" PRIu64 " of %" PRIu64 " %s (%s) to %s", exported, asked,
                 cli_plural(asked, "key", "keys"), hb, dq);
        if (unnamed)
            cli_note(a, "%" PRIu64 " %s no name (written by another program, or a key longer than "
                     "64 KiB), so %s not exported; name keys to export them",
                     unnamed, cli_plural(unnamed, "entry has", "entries have"),
                     cli_plural(unnamed, "it was", "they were"));
        if (failed)
            ret = CLI_FAIL;
    }
    if (rootfd >= 0)
        close(rootfd);
    int crc = cli_close_store(st, a->store_path);
    for (int i = 0; i < nkeys; i++)
        cli_key_free(&keys[i]);
    free(keys);
    return ret != CLI_OK ? ret : crc;
}
