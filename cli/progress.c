/*
 * progress.c - progress display on stderr for long operations. It is drawn
 * only when stderr is a terminal, so logs and pipes never receive control
 * characters, and it erases itself when done so the final messages stay
 * readable. A byte-counting bar serves reads, writes and imports; a thread
 * redraws calls that report no progress: compaction as the share of the new
 * file written so far (watched from its size), check as a spinner.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define BAR_WIDTH 30
#define REDRAW_NS 100000000LL /* 10 redraws a second at most */

struct cli_progress {
    char label[40];
    uint64_t total;
    uint64_t min_bytes;
    uint64_t base;
    int64_t start_ns;
    int64_t last_ns;
    int drawn;
};

/* The bar on screen, if any: messages erase it first (cli_progress_clear_line). */
static struct cli_progress *on_screen;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void set_label(char *dst, size_t cap, const char *label) {
    size_t n = strlen(label);
    if (n < cap) {
        memcpy(dst, label, n + 1);
        return;
    }
    /* keep the end: for paths the file name is the informative part */
    memcpy(dst, "...", 3);
    memcpy(dst + 3, label + n - (cap - 4), cap - 4);
    dst[cap - 1] = '\0';
}

struct cli_progress *cli_progress_start(const char *label, uint64_t total, uint64_t min_bytes) {
    if (!isatty(STDERR_FILENO))
        return NULL;
    struct cli_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL; /* a missing progress bar is no reason to fail */
    set_label(p->label, sizeof p->label, label);
    p->total = total;
    p->min_bytes = min_bytes;
    p->start_ns = now_ns();
    return p;
}

void cli_progress_set_label(struct cli_progress *p, const char *label) {
    if (p)
        set_label(p->label, sizeof p->label, label);
}

void cli_progress_base(struct cli_progress *p, uint64_t base) {
    if (p)
        p->base = base;
}

void cli_progress_update(struct cli_progress *p, uint64_t done) {
    if (!p)
        return;
    done += p->base;
    if (done < p->min_bytes)
        return;
    int64_t t = now_ns();
    int final = p->total && done >= p->total;
    if (p->drawn && !final && t - p->last_ns < REDRAW_NS)
        return;
    p->last_ns = t;
    p->drawn = 1;
    on_screen = p;
    char d[32], tot[32], rate[48] = "";
    cli_format_bytes(d, sizeof d, done);
    /* A rate from a fraction of a second says nothing (a pipe hands over
     * megabytes at once): none is shown before half a second. */
    double secs = (double)(t - p->start_ns) / 1e9;
    if (secs >= 0.5) {
        rate[0] = ' ';
        cli_format_bytes(rate + 1, sizeof rate - 1, (uint64_t)((double)done / secs));
        strcat(rate, "/s");
    }
    if (p->total) {
        uint64_t shown = done > p->total ? p->total : done;
        int fill = (int)((double)shown / (double)p->total * BAR_WIDTH);
        int pct = (int)((double)shown * 100.0 / (double)p->total);
        char bar[BAR_WIDTH + 1];
        for (int i = 0; i < BAR_WIDTH; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[BAR_WIDTH] = '\0';
        cli_format_bytes(tot, sizeof tot, p->total);
        fprintf(stderr, "\r\033[K%s [%s] %3d%% %s / %s%s", p->label, bar, pct, d, tot, rate);
    } else {
        fprintf(stderr, "\r\033[K%s %s%s", p->label, d, rate);
    }
    fflush(stderr);
}

void cli_progress_end(struct cli_progress *p) {
    if (!p)
        return;
    if (p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    if (on_screen == p)
        on_screen = NULL;
    free(p);
}

void cli_progress_clear_line(void) {
    if (!on_screen)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    on_screen->drawn = 0;
    on_screen->last_ns = 0;
    on_screen = NULL;
}

/* ------------------------------------------------------------------------ */
/* Spinner for calls without progress reports                                */
/* ------------------------------------------------------------------------ */

struct cli_ticker {
    char label[64];
    pthread_t thread;
    atomic_int stop;
    int64_t start_ns;
    char watch[4200]; /* a file whose size shows the progress ("" = spinner) */
    uint64_t expected;
    int last_pct;
};

static void ticker_draw(struct cli_ticker *t, unsigned frame) {
    static const char spin[] = "|/-\\";
    double secs = (double)(now_ns() - t->start_ns) / 1e9;
    struct stat sb;
    if (t->watch[0] && t->expected) {
        /* The new file only grows while it is written; once it is renamed
         * into place it is gone and the last figure stays. */
        if (stat(t->watch, &sb) == 0) {
            uint64_t done = (uint64_t)sb.st_size < t->expected ? (uint64_t)sb.st_size : t->expected;
            t->last_pct = (int)((double)done * 100.0 / (double)t->expected);
        }
        int fill = t->last_pct * BAR_WIDTH / 100;
        char bar[BAR_WIDTH + 1];
        for (int i = 0; i < BAR_WIDTH; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[BAR_WIDTH] = '\0';
        fprintf(stderr, "\r\033[K%s [%s] %3d%% %.1fs", t->label, bar, t->last_pct, secs);
    } else {
        fprintf(stderr, "\r\033[K%s %c %.1fs", t->label, spin[frame % 4], secs);
    }
    fflush(stderr);
}

static void *ticker_main(void *arg) {
    struct cli_ticker *t = arg;
    unsigned frame = 1;
    for (;;) {
        struct timespec ts = {0, REDRAW_NS};
        nanosleep(&ts, NULL);
        if (atomic_load(&t->stop))
            break;
        ticker_draw(t, frame++);
    }
    return NULL;
}

struct cli_ticker *cli_ticker_start(const char *label) {
    return cli_ticker_start_file(label, NULL, 0);
}

struct cli_ticker *cli_ticker_start_file(const char *label, const char *watch_path,
                                         uint64_t expected) {
    if (!isatty(STDERR_FILENO))
        return NULL;
    struct cli_ticker *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    set_label(t->label, sizeof t->label, label);
    if (watch_path && strlen(watch_path) < sizeof t->watch) {
        strcpy(t->watch, watch_path);
        t->expected = expected;
    }
    atomic_init(&t->stop, 0);
    t->start_ns = now_ns();
    /* The first frame is drawn here, so even a quick run shows what it did. */
    ticker_draw(t, 0);
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
        /* no thread, no spinner: erase the frame and run without one */
        fputs("\r\033[K", stderr);
        free(t);
        return NULL;
    }
    return t;
}

void cli_ticker_end(struct cli_ticker *t) {
    if (!t)
        return;
    atomic_store(&t->stop, 1);
    pthread_join(t->thread, NULL);
    fputs("\r\033[K", stderr);
    fflush(stderr);
    free(t);
}
