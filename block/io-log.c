/* Rate-limited logging of failed node I/O (see block/io-log.h). */
#define G_LOG_DOMAIN "blockd-block"
#include "block/io-log.h"

#include <errno.h>
#include <inttypes.h>
#include <glib.h>

static __thread int depth;
static __thread char *cause;

typedef struct Repeats {
    char *node;
    const char *op;
    int err;
    unsigned count;       /* failures since the last line about them */
    gint64 since;         /* monotonic us of the first of those */
    gint64 last_seen;     /* monotonic us */
} Repeats;

static GMutex lock;
static GHashTable *repeats;  /* "node/op/errno" -> Repeats * */
static guint timer;

static void repeats_free(gpointer p)
{
    Repeats *r = p;
    g_free(r->node);
    g_free(r);
}

void io_log_enter(void)
{
    depth++;
}

bool io_log_active(void)
{
    return depth > 0;
}

void io_log_note_cause(const char *text)
{
    if (depth > 0 && !cause)
        cause = g_strdup(text);
}

static void log_repeats(Repeats *r, gint64 now)
{
    gint64 seconds = MAX(1, (now - r->since + G_TIME_SPAN_SECOND - 1) / G_TIME_SPAN_SECOND);
    g_message("node '%s': %u more %s error%s (%s) in the last %" G_GINT64_FORMAT " s",
              r->node, r->count, r->op, r->count == 1 ? "" : "s", g_strerror(r->err), seconds);
    r->count = 0;
}

/* Main loop, every IO_LOG_INTERVAL_S while failures are remembered. */
static gboolean on_tick(gpointer data)
{
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&lock);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, repeats);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Repeats *r = value;
        if (r->count)
            log_repeats(r, now);
        else if (now - r->last_seen >= IO_LOG_INTERVAL_S * G_TIME_SPAN_SECOND)
            g_hash_table_iter_remove(&it);  /* quiet again: the next failure is logged in full */
    }
    bool more = g_hash_table_size(repeats) > 0;
    if (!more)
        timer = 0;
    g_mutex_unlock(&lock);
    return more ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* True when this failure is the first of its kind for a while. */
static bool note_failure(const char *node, const char *op, int err)
{
    g_autofree char *key = g_strdup_printf("%s/%s/%d", node, op, err);
    g_mutex_lock(&lock);
    if (!repeats)
        repeats = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, repeats_free);
    Repeats *r = g_hash_table_lookup(repeats, key);
    bool first = r == NULL;
    if (first) {
        r = g_new0(Repeats, 1);
        r->node = g_strdup(node);
        r->op = op;
        r->err = err;
        g_hash_table_insert(repeats, g_steal_pointer(&key), r);
        if (!timer)
            timer = g_timeout_add_seconds(IO_LOG_INTERVAL_S, on_tick, NULL);
    }
    gint64 now = g_get_monotonic_time();
    if (!first && r->count++ == 0)
        r->since = now;
    r->last_seen = now;
    g_mutex_unlock(&lock);
    return first;
}

/* Logs a failed request (the first of its kind at once, repeats summed up). */
static int log_failure(const char *node, const char *op, uint64_t offset, uint64_t len, int r, const char *why)
{
    if (r >= 0 || r == -ENOTSUP || r == -EOPNOTSUPP || r == -ECANCELED)
        return r;
    if (note_failure(node, op, -r)) {
        g_autofree char *range = len || offset
            ? g_strdup_printf(" of %" PRIu64 " bytes at offset %" PRIu64, len, offset) : g_strdup("");
        g_message("node '%s': %s%s failed: %s%s%s%s", node, op, range, g_strerror(-r),
                  why ? " (" : "", why ? why : "", why ? ")" : "");
    }
    return r;
}

int io_log_leave(const char *node, const char *op, uint64_t offset, uint64_t len, int r)
{
    if (--depth > 0)
        return r;
    g_autofree char *why = g_steal_pointer(&cause);
    return log_failure(node, op, offset, len, r, why);
}

int io_log_result(const char *node, const char *op, uint64_t offset, uint64_t len, int r)
{
    return log_failure(node, op, offset, len, r, NULL);
}

void io_log_flush(void)
{
    g_mutex_lock(&lock);
    if (repeats) {
        GHashTableIter it;
        gpointer value;
        g_hash_table_iter_init(&it, repeats);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
            Repeats *r = value;
            if (r->count)
                log_repeats(r, g_get_monotonic_time());
        }
        g_clear_pointer(&repeats, g_hash_table_unref);
    }
    if (timer)
        g_source_remove(timer);
    timer = 0;
    g_mutex_unlock(&lock);
}
