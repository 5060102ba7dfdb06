/* The progress line (see progress.h). */
#include "tools/blockctl/progress.h"
#include "tools/blockctl/output.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum { BAR_MIN = 10, BAR_MAX = 40, DEFAULT_COLUMNS = 80 };

void progress_start(Progress *p)
{
    p->active = isatty(STDERR_FILENO);
    p->start_us = g_get_monotonic_time();
    p->drawn = 0;
}

double progress_seconds(const Progress *p)
{
    return (double)(g_get_monotonic_time() - p->start_us) / 1e6;
}

/* fields[0..k) joined by spaces. */
static void join(GString *s, const char *const *fields, int k)
{
    for (int i = 0; i < k; i++) {
        if (i)
            g_string_append_c(s, ' ');
        g_string_append(s, fields[i]);
    }
}

/* Lays out the line for `width` columns into buf: a bar for `fraction`, then
 * fields[0] (always) and as many of the next fields as fit. */
static void layout(char *buf, size_t size, int width, double fraction, const char *const *fields, int n)
{
    g_autoptr(GString) line = g_string_new(NULL);
    if (fraction < 0)
        fraction = 0;
    if (fraction > 1)
        fraction = 1;
    /* With a bar: as many fields as leave it BAR_MIN cells. */
    for (int k = n; k >= 1 && !line->len; k--) {
        g_autoptr(GString) text = g_string_new(NULL);
        join(text, fields, k);
        int room = width - (int)text->len - 3;  /* "[", "] " */
        if (room < BAR_MIN)
            continue;
        int cells = MIN(room, BAR_MAX), fill = (int)(fraction * cells);
        g_string_append_c(line, '[');
        for (int i = 0; i < cells; i++)
            g_string_append_c(line, i < fill ? '#' : '.');
        g_string_append(line, "] ");
        g_string_append(line, text->str);
    }
    /* Without: as many fields as fit, at least the first (cut if it must be). */
    for (int k = n; k >= 1 && !line->len; k--) {
        g_autoptr(GString) text = g_string_new(NULL);
        join(text, fields, k);
        if ((int)text->len <= width || k == 1)
            g_string_append(line, text->str);
    }
    if ((int)line->len > width)
        g_string_truncate(line, width > 0 ? (gsize)width : 0);
    g_strlcpy(buf, line->str, size);
}

static void draw(Progress *p, double fraction, const char *const *fields, int n)
{
    if (!p->active)
        return;
    int columns = output_columns(STDERR_FILENO);
    /* The last column stays free: some terminals wrap once it is written. */
    int width = (columns > 0 ? columns : DEFAULT_COLUMNS) - 1;
    char line[1024];
    layout(line, sizeof line, MIN(width, (int)sizeof line - 1), fraction, fields, n);
    int len = (int)strlen(line);
    /* Blank what is left of a longer earlier line, within the width. */
    int pad = MIN(p->drawn, width) - len;
    fprintf(stderr, "\r%s%*s", line, pad > 0 ? pad : 0, "");
    fflush(stderr);
    p->drawn = len;
}

/* Sizes right-aligned in a fixed width, so the bar keeps its length as the numbers change. */
static const char *padded_size(double bytes, char *buf, size_t len)
{
    char raw[32];
    snprintf(buf, len, "%9s", output_size(bytes, raw, sizeof raw));
    return buf;
}

/* "ETA 42s", "ETA 3m07s", "ETA 2h15m" in a fixed width. */
static void format_eta(char *buf, size_t len, double secs)
{
    long s = secs > 0 && secs < 1e8 ? (long)(secs + 0.5) : 0;
    char t[24];
    if (s < 60)
        snprintf(t, sizeof t, "%lds", s);
    else if (s < 3600)
        snprintf(t, sizeof t, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(t, sizeof t, "%ldh%02ldm", s / 3600, s / 60 % 60);
    snprintf(buf, len, "ETA %-6s", t);
}

void progress_copy(Progress *p, gint64 done, gint64 total)
{
    double secs = progress_seconds(p), rate = secs > 0 ? (double)done / secs : 0;
    char pct[16], b1[32], b2[32], b3[32], sizes[80], speed[48], eta[48];
    snprintf(pct, sizeof pct, "%5.1f%%", total ? 100.0 * (double)done / (double)total : 0.0);
    snprintf(sizes, sizeof sizes, "%s/%s", padded_size((double)done, b1, sizeof b1),
             output_size((double)total, b2, sizeof b2));  /* the total rarely changes */
    snprintf(speed, sizeof speed, "%s/s", padded_size(rate, b3, sizeof b3));
    format_eta(eta, sizeof eta, rate > 0 ? (double)(total - done) / rate : 0.0);
    const char *fields[] = { pct, sizes, speed, eta };
    draw(p, total ? (double)done / (double)total : 0, fields, G_N_ELEMENTS(fields));
}

void progress_mirror(Progress *p, gint64 done, gint64 total, const char *status)
{
    double secs = progress_seconds(p);
    char b1[32], b2[32], b3[32], dirty[48], copied[48], speed[48], state[32];
    snprintf(dirty, sizeof dirty, "%s dirty", padded_size((double)(total - done), b1, sizeof b1));
    snprintf(state, sizeof state, "%-7s", status);
    snprintf(copied, sizeof copied, "%s copied", padded_size((double)done, b2, sizeof b2));
    snprintf(speed, sizeof speed, "%s/s", padded_size(secs > 0 ? (double)done / secs : 0, b3, sizeof b3));
    const char *fields[] = { dirty, state, copied, speed };
    draw(p, total ? (double)done / (double)total : 0, fields, G_N_ELEMENTS(fields));
}

void progress_end(Progress *p)
{
    if (p->active && p->drawn) {
        fputc('\n', stderr);
        fflush(stderr);
    }
    p->drawn = 0;
}
