/* Logging of failed node I/O (block/node.c's entry points).
 *
 * Node calls nest (raw over blkdebug over file): only the outermost call of
 * a thread logs, so each failed request of a client or a job is one line,
 * naming the node it asked, the operation, the range and the error, plus
 * the cause a lower layer noted (a plugin's nbdkit_error text).  The first
 * failure of a node+operation+errno is logged at once; repeats are counted
 * and summed up every IO_LOG_INTERVAL_S seconds while they go on, so a
 * failing disk does not flood the log. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define IO_LOG_INTERVAL_S 10

/* Marks the start of a node I/O call on this thread. */
void io_log_enter(void);
/* Ends it and returns r; a negative r of the outermost call is logged
 * (except ENOTSUP and ECANCELED, which callers expect and handle). */
int io_log_leave(const char *node, const char *op, uint64_t offset, uint64_t len, int r);
/* Logs the result of a request that completed away from its call (deferred
 * I/O, block/io-defer.h) as its outermost call would; returns r. */
int io_log_result(const char *node, const char *op, uint64_t offset, uint64_t len, int r);
/* True inside a node I/O call on this thread. */
bool io_log_active(void);
/* Notes why the current I/O call is failing (kept for its log line). */
void io_log_note_cause(const char *text);
/* Logs the counts not yet summed up (at exit). */
void io_log_flush(void);
