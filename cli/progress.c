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
#include <sys/ioctl.h>
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
    const char *end = label + n - (cap - 4);
    while ((*end & 0xc0) == 0x80) /* not from the middle of a UTF-8 character */
        end++;
    memcpy(dst, "...", 3);
    memcpy(dst + 3, end, strlen(end) + 1);
}

/* Columns of the terminal on stderr (asked at each draw, so a resized window
 * is followed); 80 when it does not say. */
static int term_columns(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

#define BAR_MIN_WIDTH 10
#define LABEL_MIN_WIDTH 8

/*
 * Draws one progress line that fits the terminal: a line wider than the
 * window wraps, and the carriage return of the next redraw goes back to its
 * last row only, leaving a row behind at every redraw. The parts go in this
 * order as room runs out: the full figures, then the secondary ones (stats[1]
 * drops the rate or the time), a narrower bar, the bar, the figures but the
 * first (stats[2]), the label's start (its end names the file or key), the
 * label. frac < 0: no bar. Lengths count bytes, never fewer than the
 * columns UTF-8 text takes.
 */
static void draw_fitted(const char *label, double frac, const char *const stats[3]) {
    int room = term_columns() - 1; /* the last column would wrap on some terminals */
    int lab = (int)strlen(label);
    char line[512];
    line[0] = '\0';
    for (int i = 0; i < 3 && !line[0]; i++) {
        int st = (int)strlen(stats[i]);
        int bar = room - lab - st - 4; /* label " [" bar "] " stats */
        if (bar > BAR_WIDTH)
            bar = BAR_WIDTH;
        if (frac >= 0 && bar >= BAR_MIN_WIDTH) {
            char b[BAR_WIDTH + 1];
            int fill = (int)(frac * bar);
            for (int k = 0; k < bar; k++)
                b[k] = k < fill ? '#' : '-';
            b[bar] = '\0';
            snprintf(line, sizeof line, "%s [%s] %s", label, b, stats[i]);
        } else if (lab + 1 + st <= room && (frac < 0 || i == 2)) {
            snprintf(line, sizeof line, "%s %s", label, stats[i]);
        }
    }
    if (!line[0]) {
        int st = (int)strlen(stats[2]);
        int keep = room - st - 1 - 3; /* "..." label end, " ", stats */
        if (keep >= LABEL_MIN_WIDTH) {
            const char *end = label + lab - keep;
            while ((*end & 0xc0) == 0x80) /* not in the middle of a UTF-8 character */
                end++;
            snprintf(line, sizeof line, "...%s %s", end, stats[2]);
        } else if (st <= room) {
            snprintf(line, sizeof line, "%s", stats[2]);
        }
    }
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
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
        int pct = (int)((double)shown * 100.0 / (double)p->total);
        char full[128], figures[96], percent[8];
        cli_format_bytes(tot, sizeof tot, p->total);
        snprintf(full, sizeof full, "%3d%% %s / %s%s", pct, d, tot, rate);
        snprintf(figures, sizeof figures, "%3d%% %s / %s", pct, d, tot);
        snprintf(percent, sizeof percent, "%3d%%", pct);
        const char *stats[3] = {full, figures, percent};
        draw_fitted(p->label, (double)shown / (double)p->total, stats);
    } else {
        char full[96];
        snprintf(full, sizeof full, "%s%s", d, rate);
        const char *stats[3] = {full, d, d};
        draw_fitted(p->label, -1, stats);
    }
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
        char full[48], percent[8];
        snprintf(full, sizeof full, "%3d%% %.1fs", t->last_pct, secs);
        snprintf(percent, sizeof percent, "%3d%%", t->last_pct);
        const char *stats[3] = {full, percent, percent};
        draw_fitted(t->label, t->last_pct / 100.0, stats);
    } else {
        char full[48], spinner[2] = {spin[frame % 4], '\0'};
        snprintf(full, sizeof full, "%c %.1fs", spin[frame % 4], secs);
        const char *stats[3] = {full, spinner, spinner};
        draw_fitted(t->label, -1, stats);
    }
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
