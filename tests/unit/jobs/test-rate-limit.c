/* jobs/rate-limit.c with a simulated clock: a job dispatching chunks as
 * rate_limit_chunk() allows and waiting as rate_limit_account() says never
 * moves more than 1.25x the speed through any 100 ms window (the bound the
 * header promises: speed x window plus one chunk of a fifth of a window),
 * averages the speed over seconds, gets no burst after idling, and a speed
 * change applies at once. */
#include <glib.h>

#include "jobs/rate-limit.h"

#define MS 1000000ll
#define KiB 1024ull
#define MiB (1024ull * 1024)

typedef struct Dispatch {
    int64_t at;
    uint64_t bytes;
} Dispatch;

/* Dispatches as fast as the limiter allows from `start` until `until`,
 * chunks of rate_limit_chunk(unit) capped at `chunk_cap`. */
static GArray *run(RateLimit *rl, int64_t start, int64_t until, uint64_t unit, uint64_t chunk_cap)
{
    GArray *log = g_array_new(FALSE, FALSE, sizeof(Dispatch));
    int64_t now = start;
    while (now < until) {
        uint64_t n = MIN(rate_limit_chunk(rl, unit), chunk_cap);
        Dispatch d = { now, n };
        g_array_append_val(log, d);
        int64_t next = rate_limit_account(rl, n, now);
        now = MAX(now + 1000, next);    /* at least 1 us per dispatch */
    }
    return log;
}

/* The most bytes dispatched in any window of `window` ns. */
static uint64_t max_in_window(GArray *log, int64_t window)
{
    uint64_t best = 0, sum = 0;
    guint j = 0;
    for (guint i = 0; i < log->len; i++) {
        Dispatch *d = &g_array_index(log, Dispatch, i);
        sum += d->bytes;
        while (g_array_index(log, Dispatch, j).at <= d->at - window)
            sum -= g_array_index(log, Dispatch, j++).bytes;
        best = MAX(best, sum);
    }
    return best;
}

static uint64_t total(GArray *log)
{
    uint64_t t = 0;
    for (guint i = 0; i < log->len; i++)
        t += g_array_index(log, Dispatch, i).bytes;
    return t;
}

static void test_windows(void)
{
    static const uint64_t speeds[] = { 1 * MiB, 10 * MiB, 333 * KiB, 100 * MiB, 4 * MiB + 1 };
    for (guint i = 0; i < G_N_ELEMENTS(speeds); i++) {
        RateLimit rl = { 0 };
        rate_limit_set_speed(&rl, speeds[i], 0);
        uint64_t unit = 4 * KiB;
        GArray *log = run(&rl, 0, 3000 * MS, unit, UINT64_MAX);
        uint64_t allowed = speeds[i] / 10;
        uint64_t worst = max_in_window(log, 100 * MS);
        g_assert_cmpuint(worst, <=, allowed + allowed / 4 + unit);
        /* Over 3 s: the speed, within one chunk. */
        uint64_t t = total(log);
        g_assert_cmpuint(t, <=, speeds[i] * 3 + rate_limit_chunk(&rl, unit));
        g_assert_cmpuint(t, >=, speeds[i] * 3 - rate_limit_chunk(&rl, unit));
        g_array_unref(log);
    }
}

static void test_chunk(void)
{
    RateLimit rl = { 0 };
    g_assert_cmpuint(rate_limit_chunk(&rl, 65536), ==, UINT64_MAX);
    rate_limit_set_speed(&rl, 1 * MiB, 0);
    /* 1 MiB/s: 100 ms allow 104857 bytes, a fifth is 20971: one 4 KiB unit
     * fits 5 times, a 64 KiB cluster not once (at least one unit). */
    g_assert_cmpuint(rate_limit_chunk(&rl, 4096), ==, 5 * 4096);
    g_assert_cmpuint(rate_limit_chunk(&rl, 65536), ==, 65536);
    rate_limit_set_speed(&rl, 1, 0);
    g_assert_cmpuint(rate_limit_chunk(&rl, 512), ==, 512);
    rate_limit_set_speed(&rl, UINT64_MAX, 0);
    g_assert_cmpuint(rate_limit_chunk(&rl, 512) % 512, ==, 0);
}

static void test_no_burst_after_idle(void)
{
    RateLimit rl = { 0 };
    rate_limit_set_speed(&rl, 1 * MiB, 0);
    GArray *a = run(&rl, 0, 500 * MS, 4096, UINT64_MAX);
    /* Idle 5 s, then go again: the first 100 ms are no fuller than usual. */
    GArray *b = run(&rl, 5500 * MS, 6000 * MS, 4096, UINT64_MAX);
    uint64_t allowed = MiB / 10;
    g_assert_cmpuint(max_in_window(b, 100 * MS), <=, allowed + allowed / 4 + 4096);
    g_array_unref(a);
    g_array_unref(b);
}

static void test_speed_change(void)
{
    /* A huge dispatch at 1 byte/s owes years; set-speed forgives it. */
    RateLimit rl = { 0 };
    rate_limit_set_speed(&rl, 1, 0);
    int64_t next = rate_limit_account(&rl, 65536, 0);
    g_assert_cmpint(next, >=, 65536ll * 1000 * MS);
    rate_limit_set_speed(&rl, 10 * MiB, 1 * MS);
    g_assert_cmpint(rate_limit_account(&rl, 1 * MiB, 1 * MS), ==, 1 * MS + 100 * MS);
    /* Unlimited: never wait. */
    rate_limit_set_speed(&rl, 0, 2 * MS);
    g_assert_cmpint(rate_limit_account(&rl, 1ull << 40, 2 * MS), ==, 2 * MS);
    /* No overflow for the largest counts. */
    rate_limit_set_speed(&rl, 1, 0);
    g_assert_cmpint(rate_limit_account(&rl, UINT64_MAX, 0), ==, G_MAXINT64 / 2);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rate-limit/windows", test_windows);
    g_test_add_func("/rate-limit/chunk", test_chunk);
    g_test_add_func("/rate-limit/no-burst-after-idle", test_no_burst_after_idle);
    g_test_add_func("/rate-limit/speed-change", test_speed_change);
    return g_test_run();
}
