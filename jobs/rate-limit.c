/* A job's speed limit (see rate-limit.h). */
#include "jobs/rate-limit.h"

#include <glib.h>

#define NS_PER_S 1000000000ull
#define WINDOW_NS (100 * 1000 * 1000ull)   /* QEMU's 100 ms slice */
#define CHUNKS_PER_WINDOW 5

void rate_limit_set_speed(RateLimit *rl, uint64_t speed, int64_t now_ns)
{
    rl->speed = speed;
    rl->next_ns = now_ns;
}

int64_t rate_limit_account(RateLimit *rl, uint64_t bytes, int64_t now_ns)
{
    if (!rl->speed)
        return now_ns;
    /* Idle time earns no credit: a burst after a pause is not allowed. */
    int64_t start = MAX(rl->next_ns, now_ns);
    /* bytes / speed seconds, without overflow for any 64-bit byte count. */
    long double ns = (long double)bytes * NS_PER_S / (long double)rl->speed;
    long double next = (long double)start + ns;
    rl->next_ns = next >= (long double)(G_MAXINT64 / 2) ? G_MAXINT64 / 2 : (int64_t)next;
    return rl->next_ns;
}

uint64_t rate_limit_chunk(const RateLimit *rl, uint64_t unit)
{
    g_assert(unit > 0);
    if (!rl->speed)
        return UINT64_MAX;
    long double per_window = (long double)rl->speed * WINDOW_NS / NS_PER_S;
    long double want = per_window / CHUNKS_PER_WINDOW;
    if (want >= (long double)(UINT64_MAX / 2))
        return UINT64_MAX / 2 / unit * unit;
    uint64_t units = (uint64_t)want / unit;
    return MAX(units, 1) * unit;
}
