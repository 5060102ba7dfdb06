/* A job's speed limit (block-job-set-speed), smooth where QEMU's slices
 * are not: each dispatch of n bytes moves a virtual clock on by n/speed,
 * and the next dispatch waits for that clock, so over any interval the
 * bytes dispatched are at most speed x interval plus one dispatch.  Jobs
 * keep each dispatch to rate_limit_chunk(), a fraction of what 100 ms
 * allow, so no 100 ms window sees much more than the speed allows (QEMU
 * lets a whole 1 MiB chunk, or a mirror's 16 MiB buffer, through at once).
 * Pure: the caller supplies the time and does the waiting. */
#pragma once

#include <stdint.h>

typedef struct RateLimit {
    uint64_t speed;     /* bytes per second; 0: unlimited */
    int64_t next_ns;    /* no dispatch before this (monotonic ns) */
} RateLimit;

/* Sets the speed (0: unlimited) and forgives what earlier dispatches owed,
 * as QEMU does on block-job-set-speed. */
void rate_limit_set_speed(RateLimit *rl, uint64_t speed, int64_t now_ns);
/* Charges `bytes` dispatched at `now_ns`; returns when the next dispatch may
 * start (at or before now_ns: at once). */
int64_t rate_limit_account(RateLimit *rl, uint64_t bytes, int64_t now_ns);
/* The most bytes to dispatch at once, in whole `unit`s (at least one):
 * a fifth of what 100 ms allow; UINT64_MAX when unlimited. */
uint64_t rate_limit_chunk(const RateLimit *rl, uint64_t unit);
