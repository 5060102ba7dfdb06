/* Deferred completions (block/io-defer.c): a scope waits for completions
 * finished on other threads, scopes are reused, and a completion that
 * finishes while the owner is about to wait is never lost. */
#include "block/io-defer.h"

#include <glib.h>

typedef struct Job {
    IoDefer *d;
    gulong delay_us;
    gint *finished;
} Job;

static gpointer finisher(gpointer data)
{
    Job *j = data;
    if (j->delay_us)
        g_usleep(j->delay_us);
    g_atomic_int_inc(j->finished);
    io_defer_done(j->d);
    g_free(j);
    return NULL;
}

static void test_scope(void)
{
    g_assert_null(io_defer_current());
    IoDefer *d = io_defer_open();
    g_assert_true(io_defer_current() == d);
    g_assert_false(io_defer_close(d));
    g_assert_null(io_defer_current());
    io_defer_wait(d);

    gint finished = 0;
    d = io_defer_open();
    GThread *t[3];
    for (int i = 0; i < 3; i++) {
        io_defer_add(d);
        Job *j = g_new(Job, 1);
        *j = (Job){ d, 20000u * (gulong)(i + 1), &finished };
        t[i] = g_thread_new("finisher", finisher, j);
    }
    g_assert_true(io_defer_close(d));
    io_defer_wait(d);
    g_assert_cmpint(g_atomic_int_get(&finished), ==, 3);
    for (int i = 0; i < 3; i++)
        g_thread_join(t[i]);
}

/* Many short scopes whose completions race with the owner's wait. */
static void test_race(void)
{
    gint finished = 0;
    int total = 0;
    for (int round = 0; round < 2000; round++) {
        IoDefer *d = io_defer_open();
        int n = round % 3;
        GThread *t[2] = { NULL, NULL };
        for (int i = 0; i < n && i < 2; i++) {
            io_defer_add(d);
            Job *j = g_new(Job, 1);
            *j = (Job){ d, 0, &finished };
            t[i] = g_thread_new("finisher", finisher, j);
            total++;
        }
        io_defer_close(d);
        io_defer_wait(d);
        g_assert_cmpint(g_atomic_int_get(&finished), ==, total);
        for (int i = 0; i < 2; i++)
            if (t[i])
                g_thread_join(t[i]);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/io-defer/scope", test_scope);
    g_test_add_func("/io-defer/race", test_race);
    return g_test_run();
}
